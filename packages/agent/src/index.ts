// The public entry of @quantix/agent: the backend port, the pieces a host agent is made of
// (to run one in a process: tests, @quantix/testing's TestAgent), the simulated host a
// control plane runs in its own process for its demo nodes (its composition root passes it
// in), the node's storage (pools, volumes, the hostile-image check), its network data plane, and the QEMU command line and QMP client the agent bench compares the agent with.
export * from "./backend.js";
export * from "./simulated-host.js";
export { QemuBackend } from "./backends/qemu/qemu-backend.js";
export { buildQemuArgs } from "./backends/qemu/qemu-args.js";
export { vmPaths } from "./backends/qemu/qemu-vm-dir.js";
export { QmpClient } from "./backends/qemu/qmp-client.js";
export { SimulatedBackend } from "./backends/simulated/simulated-backend.js";
export { isProcessAlive } from "./process-state.js";
export { startAgentServer, type AgentServer, type AgentServerOptions } from "./rpc/agent-server.js";
export { enroll, loadEnrollment, type AgentTls, type EnrollOptions } from "./enroll/enrollment.js";
export { startControlPlaneLink, type ControlPlaneLink } from "./sync/control-plane-link.js";
export { fenceTargetOf, pastFenceDeadline } from "./sync/self-fence.js";
export { VmManager } from "./vm-manager.js";
export { NodeStorage, type NodeStorageOptions } from "./storage/node-storage.js";
export { dirImporter, dirUploader, type DirImportStep, type DirUploadResult } from "./storage/dir-importer.js";
export { inspectImage, ImageRefusedError, type ImageInspection, type InspectOptions } from "./storage/inspect-image.js";
export { NetworkHost, type NetworkHostOptions } from "./network/network-host.js";
export { RouterHost, type RouterHostOptions } from "./network/router-host.js";
export { probeNetworkCapabilities, type NetworkCapabilityProbe, type NetworkFeatureSupport } from "./network/capabilities.js";
// The network bench replays the data plane's own commands and ruleset (from the agent's state file) as its baseline.
export { hostRuleset, L2_TABLE, SG_TABLE } from "./network/nft-ruleset.js";
export { bridgeName, sgName, tapName, vxlanName } from "./network/names.js";
export type { HostNetworkState } from "./network/model.js";
// The edge bench (issue 15) renders a router's table as the agent does and finds its namespace.
export { routerRuleset, ROUTER_TABLE } from "./network/router-ruleset.js";
export { routerNetns, ROUTER_EXTERNAL_DEVICE, type RouterDesired } from "./network/router-model.js";
export { withVmmStateTable } from "./vm-state-table-doc.js";
