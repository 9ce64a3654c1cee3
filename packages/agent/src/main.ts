import { mkdir, readFile } from "node:fs/promises";
import { QuantixError } from "@quantix/core";
import { createJsonLogger } from "@quantix/rpc";
import { createBackend } from "./backend-factory.js";
import { loadAgentConfig, usage, type AgentConfig } from "./config.js";
import { startAgentServer } from "./rpc/agent-server.js";
import { NodeStorage } from "./storage/node-storage.js";
import { probeNetworkCapabilities } from "./network/capabilities.js";
import { NetworkHost } from "./network/network-host.js";
import { RouterHost } from "./network/router-host.js";
import { lockStateDir } from "./state-dir-lock.js";
import { startControlPlaneLink, type ControlPlaneLink } from "./sync/control-plane-link.js";
import { fenceTargetOf, pastFenceDeadline } from "./sync/self-fence.js";
import { VmManager } from "./vm-manager.js";
import { enroll, loadEnrollment, type AgentTls } from "./enroll/enrollment.js";

/** Entry point of `npm run agent`: the host agent serving vmm.v1, linked to a control plane when configured. */
async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--help")) {
    process.stdout.write(`quantix-agent: serves vmm.v1 for one host\n${usage()}\n`);
    return;
  }
  let config;
  try {
    config = loadAgentConfig(process.env, argv);
  } catch (err) {
    process.stderr.write(`quantix-agent: ${err instanceof QuantixError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const log = createJsonLogger("info");
  let backend;
  let manager;
  let server;
  let storage: NodeStorage | undefined;
  let network: NetworkHost | undefined;
  let routers: RouterHost | undefined;
  let link: ControlPlaneLink | undefined;
  let release: () => void;
  try {
    await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
    release = lockStateDir(config.stateDir);
  } catch (err) {
    process.stderr.write(`quantix-agent: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  // What GetNetworkCapabilities answers and the node's network capabilities come from: probed each time.
  const features = () => probeNetworkCapabilities(config.networkNetns, config.networkUnderlayAddress, config.networkPhysicalNetworks);
  let tls: AgentTls | undefined;
  try {
    tls = await enrolled(config, log);
  } catch (err) {
    release();
    process.stderr.write(`quantix-agent: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  try {
    backend = await createBackend(config);
    await backend.ping();
    // Incoming migrations listen where vmm.v1 does; a wildcard address is no place to send to.
    const migrationHost = config.address === "0.0.0.0" || config.address.includes(":") ? "127.0.0.1" : config.address;
    if (config.network) {
      // Converges from its state file at once: what it programmed before a restart comes back, what it no longer wants goes.
      network = new NetworkHost({ stateDir: config.stateDir, resyncMs: 30_000, ...(config.networkNetns ? { netns: config.networkNetns } : {}) });
      await network.start();
      // The routers converge from their own state file the same way (their namespaces keep forwarding while the agent is down).
      routers = new RouterHost({ stateDir: config.stateDir, resyncMs: 30_000, physicalNetworks: config.networkPhysicalNetworks, ...(config.networkNetns ? { netns: config.networkNetns } : {}) });
      await routers.start({ fenced: await pastFenceDeadline(config.stateDir) });
    }
    const ports = network;
    // Every backend's paths are checked alike, the simulator's too: what a test or a demo
    // shows on it is what a real hypervisor would be allowed.
    // Volumes of the agent's pools are VM disks too (SHARED_DIR pools lie below a shared directory).
    manager = new VmManager({ backend, ...(ports ? { portTaps: (id: string) => ports.portTap(id) } : {}), sharedDirs: config.sharedDirs, migrationHost, stateDir: config.stateDir, imageDirs: [...config.imageDirs, config.poolRoot] });
    await manager.start();
    storage = new NodeStorage({ poolRoot: config.poolRoot, sharedDirs: config.sharedDirs });
    server = await startAgentServer(manager, { host: config.address, port: config.port, log, storage, problem: () => link?.problem(), ...(network ? { network: { host: network, features, ...(routers ? { routers } : {}) } } : {}), ...(tls ? { tls } : {}) });
  } catch (err) {
    await backend?.close().catch(() => undefined);
    release();
    const e = err as NodeJS.ErrnoException;
    const why = e.code === "EADDRINUSE" ? `${config.address}:${config.port} is in use; stop the other process or set VMCP_PORT` : err instanceof Error ? err.message : String(err);
    process.stderr.write(`quantix-agent: cannot start the ${config.backend} backend: ${why}${/VMCP_[A-Z_]+/.test(why) ? "" : binaryHint(config)}\n`);
    process.exit(1);
  }
  const accel = config.backend === "qemu" ? { accel: config.qemuKvm ? "kvm" : "tcg" } : {};
  log.log("info", "agent listening", { url: server.url, backend: backend.type, ...accel, node: config.nodeName, state_dir: config.stateDir, image_dirs: config.imageDirs.join(","), pool_root: config.poolRoot });
  let stopping = false;
  const stop = (signal: string, status = 0) => {
    if (stopping) return;
    stopping = true;
    log.log("info", "shutting down; VMs keep running", { signal });
    void (async () => {
      await link?.stop();
      await server.close();
      // dnsmasq keeps serving DHCP and DNS; the next agent adopts it.
      await network?.close();
      await routers?.close();
      await backend.close();
      release();
    })().then(
      () => process.exit(status),
      (err: unknown) => {
        process.stderr.write(`quantix-agent: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  // A node has one agent: refused because another live agent serves this node name, this one exits saying so.
  const refused = (message: string) => {
    process.stderr.write(`quantix-agent: ${message}\n`);
    stop("refused", 1);
  };
  link = config.controlPlane ? startControlPlaneLink({ controlPlane: config.controlPlane, agentUrl: server.url, nodeName: config.nodeName, stateDir: config.stateDir, backend, log, fenceTarget: fenceTargetOf(manager, backend, routers), onRefused: refused, storageCapabilities: async () => [...((await storage?.capabilityNames()) ?? []), ...(network ? (await features()).features.filter((f) => f.available).map((f) => f.name) : [])], ...(tls ? { tls } : {}) }) : undefined;
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/**
 * The agent's enrollment: the one kept in its state directory, else a new one when told to
 * join (--join, --join-token, --ca-cert), else none (cleartext, for local trust mode).
 */
async function enrolled(config: AgentConfig, log: ReturnType<typeof createJsonLogger>): Promise<AgentTls | undefined> {
  const kept = await loadEnrollment(config.stateDir);
  if (kept) {
    if (config.join) log.log("info", "already enrolled; the join token was not used", { node_id: kept.nodeId, state_dir: config.stateDir });
    return kept;
  }
  if (!config.join) return undefined;
  const caPem = await readFile(config.caCert!, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new Error(`VMCP_CA_CERT (--ca-cert): cannot read ${config.caCert}: ${err.code ?? String(err)}`);
  });
  const done = await enroll({ url: config.join, joinToken: config.joinToken!, caPem, nodeName: config.nodeName, stateDir: config.stateDir });
  log.log("info", "enrolled with the control plane", { control_plane: config.join, node_id: done.nodeId, node: config.nodeName });
  return done;
}

/** Which setting picks the hypervisor binary, for start errors (a missing binary is the usual cause). */
function binaryHint(config: AgentConfig): string {
  const setting = { qemu: ["VMCP_QEMU_BINARY", config.qemuBinary], "cloud-hypervisor": ["VMCP_CH_BINARY", config.chBinary], firecracker: ["VMCP_FC_BINARY", config.fcBinary], simulated: undefined }[config.backend];
  return setting ? ` (binary '${setting[1]}' from ${setting[0]})` : "";
}

void main();
