import { file_vmm_v1_network } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { file_vmm_v1_storage } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { file_vmm_v1_vm } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { CONTROL_PLANE_URI, urisOfSubjectAltName } from "@quantix/core";
import { peerKey, RpcMetrics, startRpcServer, type Logger } from "@quantix/rpc";
import type { VmManager } from "../vm-manager.js";
import type { AgentTls } from "../enroll/enrollment.js";
import type { NodeStorage } from "../storage/node-storage.js";
import type { NetworkCapabilityProbe } from "../network/capabilities.js";
import type { NetworkHost } from "../network/network-host.js";
import { networkRoute } from "./network-routes.js";
import type { RouterHost } from "../network/router-host.js";
import { healthFallback } from "./health.js";
import { storageRoute } from "./storage-routes.js";
import { vmmRoute } from "./vmm-router.js";

/** Where and how the agent serves vmm.v1. */
export interface AgentServerOptions {
  readonly host: string;
  readonly port: number;
  readonly log: Logger;
  /** How long in-flight calls may take to finish at shutdown. */
  readonly graceMs?: number;
  /** Why the agent cannot serve as a node (the control-plane link's problem()); /_/health answers 503 with it. */
  readonly problem?: () => string | undefined;
  /**
   * An enrolled agent's certificate: serve TLS with it and require every caller to present a
   * client certificate of the cluster CA (the handshake fails otherwise); vmm.v1 calls are
   * answered only when it is the control plane's (CONTROL_PLANE_URI). Absent: cleartext.
   */
  readonly tls?: AgentTls;
  /**
   * This host's pools and volumes, served as vmm.v1 StorageService on the same port.
   * Absent: StorageService is not served (its calls answer UNIMPLEMENTED).
   */
  readonly storage?: NodeStorage;
  /**
   * This host's network data plane, served as vmm.v1 NetworkService on the same port, with
   * its capability probe (features and this host's underlay address, probeNetworkCapabilities). Absent: NetworkService is not served (its calls answer UNIMPLEMENTED).
   */
  readonly network?: {
    readonly host: NetworkHost;
    readonly features: () => Promise<NetworkCapabilityProbe>;
    /** This host's routers (ApplyRouter and the like); absent: those calls are FAILED_PRECONDITION. */
    readonly routers?: RouterHost;
  };
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
 * Serves vmm.v1 VmService, StorageService and NetworkService (Connect, gRPC and gRPC-web, over HTTP/1.1 and h2c on one
 * port, with the RPC kit's listener, interceptors and gRPC fast path), gRPC server
 * reflection of it (so `buf curl --list-methods` and grpcurl work without the .proto
 * files) and /_/health.
 */
export async function startAgentServer(manager: VmManager, options: AgentServerOptions): Promise<AgentServer> {
  const backendVersion = await manager.backend.version().catch((err: unknown) => `unknown (${err instanceof Error ? err.message : String(err)})`);
  const rpc = new RpcMetrics();
  const server = await startRpcServer({
    host: options.host,
    port: options.port,
    routes: [
      vmmRoute(manager, backendVersion),
      ...(options.storage ? [storageRoute(options.storage)] : []),
      ...(options.network ? [networkRoute(options.network.host, options.network.features, options.network.routers)] : []),
    ],
    reflection: [file_vmm_v1_vm, ...(options.storage ? [file_vmm_v1_storage] : []), ...(options.network ? [file_vmm_v1_network] : [])],
    log: options.log,
    metrics: rpc,
    fallback: healthFallback(manager.backend, backendVersion, { log: options.log, problem: options.problem, rpc }),
    // The message sizes are connect's defaults, which the agent has always had.
    limits: { maxConcurrentStreams: 1000, readMaxBytes: 0xffffffff, writeMaxBytes: 0xffffffff },
    shutdownMessage: "the agent is shutting down",
    ...(options.tls
      ? { tls: { cert: options.tls.certPem, key: options.tls.keyPem, clientCa: options.tls.caPem, clientCert: "required" as const }, interceptors: [controlPlaneOnly] }
      : {}),
    // Its watches and console follows end with the manager.
    onShutdown: () => manager.close(),
  });
  return { url: server.url, port: server.port, close: () => server.close(options.graceMs ?? 2000) };
}

/**
 * An enrolled agent answers its control plane only: a caller whose certificate (verified
 * against the cluster CA in the handshake) is another's, e.g. another node's agent, is
 * refused with PERMISSION_DENIED.
 */
const controlPlaneOnly: Interceptor = (next) => (req) => {
  const uris = urisOfSubjectAltName(req.contextValues.get(peerKey).certificate?.subjectaltname);
  if (!uris.includes(CONTROL_PLANE_URI)) {
    throw new ConnectError(`this agent answers its control plane only: the caller's certificate is not the control plane's (${CONTROL_PLANE_URI})`, Code.PermissionDenied);
  }
  return next(req);
};
