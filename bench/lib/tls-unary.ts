import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestPki } from "@quantix/testing";
import { countBad, grpcHeaders, sequentialLatency, type Latency } from "./h2-client.js";
import { saturateAll, type Saturation } from "./h2load.js";
import type { Server } from "./proc.js";
import { captureGetVm, GET_VM, isDemoVm } from "./unary.js";

/** GetVM over gRPC on two servers that differ only in TLS. */
export interface TlsUnary {
  readonly bad: { readonly clear: number; readonly tls: number };
  readonly load: { readonly clear: Saturation; readonly tls: Saturation };
  /** Node's own floor: the bare node:http2 handler answering the same bytes, h2c and over TLS. */
  readonly bare: { readonly clear: Saturation; readonly tls: Saturation };
  readonly latency: { readonly clear: Latency; readonly tls: Latency };
}

/** The environment of a control plane serving TLS with a fresh test CA's server certificate (127.0.0.1), and that CA. */
export async function tlsServerEnv(): Promise<{ env: Record<string, string>; ca: string; cleanup: () => void }> {
  const pki = await createTestPki("bench CA");
  const dir = mkdtempSync(join(tmpdir(), "quantix-bench-tls-"));
  writeFileSync(join(dir, "server.crt"), pki.server.certPem);
  writeFileSync(join(dir, "server.key"), pki.server.keyPem, { mode: 0o600 });
  return { env: { QUANTIX_TLS_CERT: join(dir, "server.crt"), QUANTIX_TLS_KEY: join(dir, "server.key") }, ca: pki.ca.certPem, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Unary GetVM over gRPC: the same control plane (demo data) in cleartext (h2c, local trust,
 * no token) and secured (TLS, h2 via ALPN, every call with `token`, a project member's
 * bearer token), taking turns: 200 checked calls each, h2load at saturation (4
 * connections x 32 streams; h2load speaks TLS itself), then latency at concurrency 1.
 */
export async function measureTlsUnary(clear: Server, tls: Server, bare: { clear: Server; tls: Server }, ca: string, token: string, logDir: string): Promise<TlsUnary> {
  const tlsUrl = `https://127.0.0.1:${tls.port}`;
  const bodies = await captureGetVm(clear.url, logDir);
  const opts = { ca };
  const auth = { authorization: `Bearer ${token}` };
  const bad = { clear: await countBad(clear.url, grpcHeaders(GET_VM), bodies.grpc, isDemoVm), tls: await countBad(tlsUrl, { ...grpcHeaders(GET_VM), ...auth }, bodies.grpc, isDemoVm, 200, 20, opts) };
  const headers = { "content-type": "application/grpc", te: "trailers" };
  const bodyFile = join(bodies.dir, "getvm-req.grpc");
  const [lc, lt, bc, bt] = (await saturateAll([
    { url: clear.url + GET_VM, bodyFile, headers, clients: 4, streams: 32 },
    { url: tlsUrl + GET_VM, bodyFile, headers: { ...headers, ...auth }, clients: 4, streams: 32 },
    { url: bare.clear.url + GET_VM, bodyFile, headers, clients: 4, streams: 32 },
    { url: `https://127.0.0.1:${bare.tls.port}${GET_VM}`, bodyFile, headers: { ...headers, ...auth }, clients: 4, streams: 32 },
  ])) as [Saturation, Saturation, Saturation, Saturation];
  const [pc, pt] = (await sequentialLatency([clear.url, tlsUrl], [grpcHeaders(GET_VM), { ...grpcHeaders(GET_VM), ...auth }], bodies.grpc, 2000, 200, 4, 60_000, opts)) as [Latency, Latency];
  return { bad, load: { clear: lc, tls: lt }, bare: { clear: bc, tls: bt }, latency: { clear: pc, tls: pt } };
}
