import type { HandlerContext } from "@connectrpc/connect";
import { QuantixError, type Principal } from "@quantix/core";
import { principalKey } from "@quantix/rpc";

/** The call's principal, set by the identity interceptor (UNAUTHENTICATED on a server without one, which is a wiring bug). */
export function callerOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(principalKey);
  if (!p) throw new QuantixError("unauthenticated", "this call needs an authenticated caller");
  return p;
}
