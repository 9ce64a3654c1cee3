import type { HandlerContext } from "@connectrpc/connect";
import type { WaitBudget } from "../services/vm-power.js";

/**
 * How long a power action may wait for the node: until shortly before the client's
 * deadline (so the answer still arrives), and never longer than the server's default.
 */
export function budgetOf(ctx: HandlerContext, defaultDeadlineMs: number): WaitBudget {
  const remaining = ctx.timeoutMs();
  const ms = remaining === undefined ? defaultDeadlineMs : Math.min(defaultDeadlineMs, Math.max(0, remaining - Math.min(250, remaining / 10)));
  return { ms, signal: ctx.signal };
}
