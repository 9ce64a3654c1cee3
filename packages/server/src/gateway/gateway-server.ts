import { join } from "node:path";
import { file_virtualdom_v1_gateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { systemClock, type Store } from "@quantix/core";
import { createJsonLogger, RpcMetrics, startRpcServer, type Logger, type RpcServer } from "@quantix/rpc";
import { AuditWriter } from "../audit/audit-writer.js";
import type { ControlPlaneConfig } from "../config.js";
import { createFallback } from "../health.js";
import { AccessTokens } from "../identity/access-tokens.js";
import { Authenticator } from "../identity/authenticator.js";
import { IdentityIndex } from "../identity/identity-index.js";
import { openStore } from "../store/open-store.js";
import { apiInterceptors } from "../rpc/api-interceptors.js";
import { loadServerTls } from "../tls/server-tls.js";
import { openGateway } from "./gateway.js";

/** A running gateway process. */
export interface GatewayServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * The MemoryGateway as its own process (`quantix gateway`): the same documents, the same
 * interceptor chain (audit, authentication: tokens of the store's users or local trust,
 * the rate limit per caller, the dom.read / dom.write policy) and the same protocols on
 * one port as the control plane serves them, without the rest of the control plane.
 */
export async function startGatewayServer(config: ControlPlaneConfig, deps: { log?: Logger; store?: Store } = {}): Promise<GatewayServer> {
  const log = deps.log ?? createJsonLogger(config.logLevel);
  const clock = systemClock;
  const tls = await loadServerTls(config);
  const store = deps.store ?? (await openStore(config.store, config.storeTuning, log));
  const startedAt = clock.now();
  const identity = new IdentityIndex(store, log);
  let gateway;
  try {
    await identity.start();
    gateway = await openGateway(store, log, { blobDir: config.store.kind === "embedded" ? join(config.store.dataDir, "documents") : undefined, historyVersions: config.gatewayHistoryVersions });
  } catch (err) {
    identity.stop();
    await store.close();
    throw err;
  }
  const access = new AccessTokens({ store, index: identity, clock, issuer: await store.clusterId(), ttlSec: config.accessTokenTtlSec });
  const authenticator = new Authenticator({ index: identity, access, store, clock });
  const audit = new AuditWriter({ store, log });
  const metrics = new RpcMetrics();
  let server: RpcServer;
  try {
    server = await startRpcServer({
      host: config.host,
      port: config.port,
      routes: [gateway.route],
      interceptors: apiInterceptors({ config, store, audit, clock, log, auth: authenticator, index: identity }),
      reflection: [file_virtualdom_v1_gateway],
      log,
      metrics,
      fallback: createFallback(store, startedAt, () => clock.now()),
      limits: { maxConcurrentStreams: config.maxConcurrentStreams, idleTimeoutMs: config.idleTimeoutMs, headersTimeoutMs: config.headersTimeoutMs, maxConnectionsPerSource: config.maxConnectionsPerSource },
      ...(tls ? { tls } : {}),
    });
  } catch (err) {
    await audit.close();
    await gateway.close();
    identity.stop();
    await store.close();
    throw err;
  }
  log.log("info", "MemoryGateway listening", { url: server.url, protocols: ["grpc", "connect", "grpc-web"], tls: tls !== undefined, store: config.store.kind });
  let closing: Promise<void> | undefined;
  return {
    url: server.url,
    port: server.port,
    close() {
      closing ??= (async () => {
        await server.close(config.shutdownGraceMs);
        await audit.close();
        await gateway.close();
        identity.stop();
        await store.close();
      })();
      return closing;
    },
  };
}
