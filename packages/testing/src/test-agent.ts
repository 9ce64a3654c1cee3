import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type AgentTls, type Backend, startAgentServer, type AgentServer, startControlPlaneLink, type ControlPlaneLink, fenceTargetOf, NodeStorage, VmManager } from "@quantix/agent";
import { silentLogger } from "@quantix/rpc";

/**
 * A host agent in this process (vmm.v1 server plus the link that registers and heartbeats),
 * over any backend: what a real agent process does, minus the process.
 */
export class TestAgent<B extends Backend = Backend> {
  server!: AgentServer;
  link!: ControlPlaneLink;
  manager!: VmManager;
  /** The agent's pools and volumes (vmm.v1.StorageService), under `<stateDir>/pools`. */
  readonly storage: NodeStorage;
  constructor(
    readonly backend: B,
    readonly stateDir: string,
    readonly name: string,
    private readonly heartbeatMs = 200,
    /**
     * The image allow-list, as an agent process's VMCP_IMAGE_DIRS: VMs may name only files
     * below these. By default the agent's own default, `<stateDir>/images`.
     */
    readonly imageDirs: readonly string[] = [join(stateDir, "images")],
    /**
     * The shared directories, as an agent process's VMCP_SHARED_DIRS: storage every agent
     * naming it reaches (SHARED_DIR pools lie below one; a migration uses what lies there
     * in place). Two TestAgents given the same directory share it as two hosts would.
     */
    readonly sharedDirs: readonly string[] = [],
  ) {
    this.storage = new NodeStorage({ poolRoot: join(stateDir, "pools"), sharedDirs });
  }

  /** Serves vmm.v1 (VmService and StorageService) on `port` (0: a free one) and links to the control plane at `cpUrl`; with `tls`, as an enrolled agent (mutual TLS both ways). */
  async start(cpUrl: string, port = 0, tls?: AgentTls): Promise<void> {
    // Volumes of the agent's pools are VM disks too, as on an agent process (VMCP_POOL_ROOT joins the allow-list).
    // The shared directories join the allow-list too (VmManager adds them), and decide what a migration copies.
    this.manager = new VmManager({ backend: this.backend, imageDirs: [...this.imageDirs, join(this.stateDir, "pools")], sharedDirs: this.sharedDirs });
    await this.manager.start();
    const secure = tls ? { tls } : {};
    this.server = await startAgentServer(this.manager, { host: "127.0.0.1", port, log: silentLogger, graceMs: 100, storage: this.storage, problem: () => this.link?.problem(), ...secure });
    this.link = startControlPlaneLink({ controlPlane: cpUrl, agentUrl: this.server.url, nodeName: this.name, stateDir: this.stateDir, backend: this.backend, log: silentLogger, heartbeatMs: this.heartbeatMs, fenceTarget: fenceTargetOf(this.manager, this.backend), fenceCheckMs: 100, storageCapabilities: () => this.storage.capabilityNames(), ...secure });
  }

  /**
   * Puts a file named `name` (a small placeholder, enough for a simulated backend) in the
   * agent's first image directory and returns its path: what a VM of this agent may name
   * as a kernel, initrd or disk.
   */
  async image(name: string, content: string | Uint8Array = "placeholder image\n"): Promise<string> {
    const dir = this.imageDirs[0];
    if (dir === undefined) throw new Error("this agent has no image directory");
    await mkdir(dir, { recursive: true });
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  }

  /** What a dead agent looks like from outside: no answers, no heartbeats (its VMs live on). */
  async kill(): Promise<void> {
    await this.link.stop();
    await this.server.close();
  }
}
