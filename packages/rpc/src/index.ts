// The public entry of @quantix/rpc: what a binary of ours (the control plane, the host
// agent, the document gateway) needs to serve its API over Connect, gRPC and gRPC-Web on
// one port, with one interceptor chain on every path.
export { DEFAULT_LIMITS, startRpcServer, type Fallback, type RpcLimits, type RpcServer, type RpcServerOptions } from "./rpc-server.js";
export { route, type Route } from "./routes.js";
export { gzipWherePays } from "./fast-path/response-compression.js";
export type { ListenerTls, UpgradeHandler } from "./listener.js";
export { inProcessTransport } from "./in-process.js";
export { withLeanUnary, type UnaryTransportOptions } from "./unary-transport.js";
export { mapErrors } from "./interceptors/map-errors.js";
export { observeCalls, type ObserveOptions } from "./interceptors/observe-calls.js";
export { rateLimit, type RateLimiter, type RateLimitOptions } from "./interceptors/rate-limit.js";
export { servedByFastPath } from "./fast-path/fast-context.js";
export { boundText, MESSAGE_MAX_BYTES, toConnectError, unimplemented } from "./errors.js";
export { createJsonLogger, silentLogger, type Logger, type LogLevel } from "./log/logger.js";
export { LATENCY_BUCKETS_SEC, RpcMetrics } from "./metrics/rpc-metrics.js";
export { peerKey, principalKey, peerOfSocket, requestHeader, type Peer } from "./call-context.js";
export { codeLabel } from "./code-label.js";
export { certificateInfo, createClusterCa, createCsr, issueForCsr, issueWithNewKey, type CertificateSubject, type KeyAndCert } from "./pki/pki.js";
