// The public entry of @quantix/rpc: what the control plane, the host agent and any other
// binary of ours need to serve an API over Connect, gRPC and gRPC-Web on one port.
export { listenDual, type DualListener, type ListenerLimits, type StreamHook } from "./listener.js";
export { createJsonLogger, silentLogger, type Logger, type LogLevel } from "./log/logger.js";
export { toConnectError, unimplemented } from "./errors.js";
export { codeLabel } from "./code-label.js";
export { idsOf, logRpc, observeAndMapErrors } from "./interceptors/observe-calls.js";
export { GrpcFastPath, type FastPathOptions } from "./fast-path/grpc-fast-path.js";
export { encodeMessage } from "./fast-path/encode-cache.js";
export { registerReflection } from "./reflection.js";
export { registerRoutes, route, type Route } from "./routes.js";
export { LATENCY_BUCKETS_SEC, RpcMetrics } from "./metrics/rpc-metrics.js";
