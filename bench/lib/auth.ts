import http from "node:http";
import https from "node:https";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, exchange, grpcHeaders } from "./h2-client.js";
import { saturateAll, type Saturation } from "./h2load.js";
import { GET_VM, isDemoVm } from "./unary.js";

/** The bootstrap admin's password of the bench's secured server. */
export const BENCH_ADMIN_PASSWORD = "bench-admin-password-0";
const DEMO_PROJECT = "00000000-0000-0000-0000-000000000001";

/** A Connect JSON call; over https, trusting `ca`. */
async function call(url: string, procedure: string, body: unknown, token?: string, ca?: string): Promise<Record<string, unknown>> {
  const headers = { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const text = JSON.stringify(body);
  const { status, json } = await new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
    const req = (url.startsWith("https:") ? https : http).request(`${url}/${procedure}`, { method: "POST", headers, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> });
        } catch (err) {
          reject(err as Error);
        }
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(text);
  });
  if (status !== 200) throw new Error(`${procedure}: ${status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * Tokens of a member of the demo project (a user the admin makes and binds): its access
 * token (a JWT from Login) and an API token it makes, so the measured calls pass
 * authentication and the project check of GetVM.
 */
export async function memberTokens(url: string, ca?: string): Promise<{ jwt: string; api: string }> {
  const login = (username: string, password: string) => call(url, "Quantixkvm.identity.v1.IdentityService/Login", { username, password }, undefined, ca);
  const admin = (await login("admin", BENCH_ADMIN_PASSWORD))["accessToken"] as string;
  const user = await call(url, "Quantixkvm.identity.v1.IdentityService/CreateUser", { username: "bench", password: BENCH_ADMIN_PASSWORD }, admin, ca);
  await call(url, "Quantixkvm.identity.v1.ProjectService/SetRoleBinding", { projectId: DEMO_PROJECT, principalType: "PRINCIPAL_TYPE_USER", principalId: user["id"], role: "ROLE_MEMBER" }, admin, ca);
  const jwt = (await login("bench", BENCH_ADMIN_PASSWORD))["accessToken"] as string;
  const api = (await call(url, "Quantixkvm.identity.v1.IdentityService/CreateToken", { name: "bench", projectId: DEMO_PROJECT, role: "ROLE_MEMBER" }, jwt, ca))["secret"] as string;
  return { jwt, api };
}

/** One server's GetVM at saturation with each token and without one. */
export interface TokenLoads {
  readonly jwt: Saturation;
  readonly api: Saturation;
  readonly without: Saturation;
}

/**
 * GetVM over gRPC at saturation, taking turns (5 rounds, medians): the secured server
 * with each token, and the local-trust one without; then Node's own floor, a bare
 * node:http2 server (bench/servers/bare-h2.ts, answering the same bytes) sent the same
 * three requests, so what a token's header costs Node itself (HPACK, header strings)
 * is measured apart from what our check of it costs.
 */
export async function authLoad(secured: string, local: string, bare: string, tokens: { jwt: string; api: string }, dir: string): Promise<{ ours: TokenLoads; bare: TokenLoads }> {
  const body = join(dir, "getvm-req.grpc");
  const session = await connect(secured);
  for (const token of [tokens.jwt, tokens.api]) {
    const check = await exchange(session, { ...grpcHeaders(GET_VM), authorization: `Bearer ${token}` }, readFileSync(body));
    if (!isDemoVm(check)) throw new Error("GetVM with the member's token did not answer the demo VM");
  }
  session.close();
  const headers = { "content-type": "application/grpc", te: "trailers" };
  const jwtHeaders = { ...headers, authorization: `Bearer ${tokens.jwt}` };
  const apiHeaders = { ...headers, authorization: `Bearer ${tokens.api}` };
  const [jwt, api, without, bareJwt, bareApi, bareWithout] = (await saturateAll(
    [
      { url: secured + GET_VM, bodyFile: body, headers: jwtHeaders, clients: 4, streams: 32 },
      { url: secured + GET_VM, bodyFile: body, headers: apiHeaders, clients: 4, streams: 32 },
      { url: local + GET_VM, bodyFile: body, headers, clients: 4, streams: 32 },
      { url: bare + GET_VM, bodyFile: body, headers: jwtHeaders, clients: 4, streams: 32 },
      { url: bare + GET_VM, bodyFile: body, headers: apiHeaders, clients: 4, streams: 32 },
      { url: bare + GET_VM, bodyFile: body, headers, clients: 4, streams: 32 },
    ],
    5,
  )) as [Saturation, Saturation, Saturation, Saturation, Saturation, Saturation];
  return { ours: { jwt, api, without }, bare: { jwt: bareJwt, api: bareApi, without: bareWithout } };
}
