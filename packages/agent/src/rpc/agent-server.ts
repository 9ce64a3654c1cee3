import { setMaxListeners } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { listenDual, observeAndMapErrors, type DualListener, type Logger } from "@quantix/rpc";
import type { VmManager } from "../vm-manager.js";
import { healthFallback } from "./health.js";
import { vmServiceImpl } from "./vm-routes.js";

/** Where and how the agent serves vmm.v1. */
export interface AgentServerOptions {
  readonly host: string;
  readonly port: number;
  readonly log: Logger;
  /** How long in-flight calls may take to finish at shutdown. */
  readonly graceMs?: number;
  /** Why the agent cannot serve as a node (the control-plane link's problem()); /_/health answers 503 with it. */
  readonly problem?: () => string | undefined;
}

/** A listening agent. */
export interface AgentServer {
  /** Base URL, e.g. http://127.0.0.1:9090. */
  readonly url: string;
  readonly port: number;
  /** Ends streams, lets unary calls finish, closes connections. */
  close(): Promise<void>;
}

/**
 * Serves vmm.v1 VmService (Connect, gRPC and gRPC-web, over HTTP/1.1 and h2c on one
 * port, with the control plane's listener and error mapping) and /_/health.
 */
export async function startAgentServer(manager: VmManager, options: AgentServerOptions): Promise<AgentServer> {
  const backendVersion = await manager.backend.version().catch((err: unknown) => `unknown (${err instanceof Error ? err.message : String(err)})`);
  const shutdown = new AbortController();
  // Each open stream links its context to this signal; many at once are normal here.
  setMaxListeners(0, shutdown.signal);
  const handler = connectNodeAdapter({
    routes: (router) => router.service(VmService, vmServiceImpl(manager, backendVersion)),
    interceptors: [observeAndMapErrors(options.log)],
    jsonOptions: { ignoreUnknownFields: false },
    shutdownSignal: shutdown.signal,
    fallback: healthFallback(manager.backend, backendVersion, { log: options.log, problem: options.problem }),
  });
  const listener: DualListener = await listenDual(options.host, options.port, handler, { maxConcurrentStreams: 1000, maxHeaderBytes: 64 * 1024 });
  const host = listener.address.includes(":") ? `[${listener.address}]` : listener.address;
  const url = `http://${host}:${listener.port}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    port: listener.port,
    close() {
      closing ??= (async () => {
        shutdown.abort(new ConnectError("the agent is shutting down", Code.Unavailable));
        manager.close();
        await listener.close(options.graceMs ?? 2000);
      })();
      return closing;
    },
  };
}
