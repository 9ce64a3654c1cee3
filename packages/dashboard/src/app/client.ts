import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";

const TOKEN_KEY = "quantix.token";

/** The access token of this tab's session (sessionStorage: gone when the tab closes). */
export const session = {
  token: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

const bearer: Interceptor = (next) => (req) => {
  const t = session.token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

/** Connect protocol (JSON) to the control plane that served this page. */
export const transport: Transport = createConnectTransport({ baseUrl: location.origin, interceptors: [bearer] });

export const client = <S extends DescService>(service: S) => createClient(service, transport);

/** An error's text for people: "code: message". */
export function errorText(err: unknown): string {
  const e = ConnectError.from(err);
  return `${Code[e.code] ?? e.code}: ${e.rawMessage}`;
}

/** The server's field violations (google.rpc.BadRequest), by field path. */
export function fieldViolations(err: unknown): Map<string, string> {
  const out = new Map<string, string>();
  const e = ConnectError.from(err);
  for (const d of e.findDetails(BadRequestSchema)) for (const v of d.fieldViolations) out.set(v.field, out.has(v.field) ? `${out.get(v.field)}; ${v.description}` : v.description);
  return out;
}
