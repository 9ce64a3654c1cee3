// The public entry of @quantix/server: the control plane to embed (tests, the bench), its
// store implementations, which the store bench measures against raw SQL, and the
// MemoryGateway's client for other services.
export { startControlPlane, type ControlPlane, type ControlPlaneDeps } from "./app.js";
export { loadConfig, type ControlPlaneConfig } from "./config.js";
export { DEMO_IMAGES, demoNodes, demoVms, SIMULATED_TAINT, SIMULATED_TOLERATION } from "./demo/demo-data.js";
export { MemoryStore } from "./store/memory-store.js";
export { migrate } from "./store/sql/migrations.js";
export { PgDriver } from "./store/sql/pg-driver.js";
export { PgliteDriver } from "./store/sql/pglite-driver.js";
export { openPglite } from "./store/sql/pglite-options.js";
export { SQL_STORE_FOLLOWING } from "./store/open-store.js";
export type { SqlDriver } from "./store/sql/sql-driver.js";
export { SqlStore } from "./store/sql/sql-store.js";
export { kindTableDdl } from "./store/sql/kind-ddl.js";
export { GatewayClient, WriterClock, type CallOptions as GatewayCallOptions, type ClockEntries, type ConnectionStats, type GatewayClientOptions, type RetryEvent, type RetryPolicy, type SubscribeOptions, type WriteOptions } from "./gateway/client.js";
export { VirtualNetworkService as NetworkServiceImpl } from "./services/network-service.js";
