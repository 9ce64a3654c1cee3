import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { QemuBackend, type AgentTls, type Backend, startAgentServer, type AgentServer, startControlPlaneLink, type ControlPlaneLink, fenceTargetOf, pastFenceDeadline, NetworkHost, NodeStorage, probeNetworkCapabilities, RouterHost, VmManager } from "@quantix/agent";
import { silentLogger } from "@quantix/rpc";

/** The data plane of a {@link TestAgent}: a host simulated as a network namespace. */
export interface TestAgentNetwork {
  /**
   * The namespace (under /run/netns, made by the test) the agent's NetworkHost programs,
   * as an agent process's VMCP_NETWORK_NETNS. The agent's QEMUs must open their TAPs there:
   * a test that builds the agent's QemuBackend passes it the same name as `netns`.
   */
  readonly netns: string;
  /** This host's VXLAN source address (VMCP_NETWORK_UNDERLAY_ADDRESS), also where its incoming migrations listen; default: the namespace's first global-scope IPv4 address (migrations then listen on 127.0.0.1). */
  readonly underlayAddress?: string;
  /** How often the data plane converges by itself (restarting a dead dnsmasq, recreating a deleted link); default 30 s as an agent process, 0: never. */
  readonly resyncMs?: number;
  /** The physical networks, name → interface in the namespace (VMCP_NETWORK_PHYSICAL_NETWORKS): what the agent's routers' external sides name. Default: none. */
  readonly physicalNetworks?: ReadonlyMap<string, string>;
}

/** The settings of a {@link TestAgent} past its backend, state directory and name. */
export interface TestAgentOptions {
  /** How often the link heartbeats; default 200 ms. */
  readonly heartbeatMs?: number;
  /** See {@link TestAgent.imageDirs}. */
  readonly imageDirs?: readonly string[];
  /** See {@link TestAgent.sharedDirs}. */
  readonly sharedDirs?: readonly string[];
  /**
   * Serve vmm.v1 NetworkService over a NetworkHost in this namespace (state in
   * `<stateDir>/network`), put VM NICs naming a port on its TAP, and register the network
   * features the probe finds as node capabilities, as an agent with VMCP_NETWORK=on.
   */
  readonly network?: TestAgentNetwork;
}

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
  /** The network data plane, from start() on, when the agent was given `network`. */
  networkHost: NetworkHost | undefined;
  /** The routers (ApplyRouter and the like), from start() on, when the agent was given `network`. */
  routerHost: RouterHost | undefined;
  /** The network probe of the data plane (its features and underlay address), when the agent was given `network`. */
  private features: (() => ReturnType<typeof probeNetworkCapabilities>) | undefined;
  /**
   * The image allow-list, as an agent process's VMCP_IMAGE_DIRS: VMs may name only files
   * below these. By default the agent's own default, `<stateDir>/images`.
   */
  readonly imageDirs: readonly string[];
  /**
   * The shared directories, as an agent process's VMCP_SHARED_DIRS: storage every agent
   * naming it reaches (SHARED_DIR pools lie below one; a migration uses what lies there
   * in place). Two TestAgents given the same directory share it as two hosts would.
   */
  readonly sharedDirs: readonly string[];
  /** The data plane's settings, when it has one. */
  readonly network: TestAgentNetwork | undefined;
  private readonly heartbeatMs: number;

  /**
   * `options`: the heartbeat period alone (then `imageDirs` and `sharedDirs` follow as
   * positional arguments, as older callers pass them), or {@link TestAgentOptions}.
   */
  constructor(
    readonly backend: B,
    readonly stateDir: string,
    readonly name: string,
    options: number | TestAgentOptions = 200,
    imageDirs?: readonly string[],
    sharedDirs?: readonly string[],
  ) {
    const o: TestAgentOptions = typeof options === "number" ? { heartbeatMs: options, ...(imageDirs ? { imageDirs } : {}), ...(sharedDirs ? { sharedDirs } : {}) } : options;
    this.heartbeatMs = o.heartbeatMs ?? 200;
    this.imageDirs = o.imageDirs ?? [join(stateDir, "images")];
    this.sharedDirs = o.sharedDirs ?? [];
    this.network = o.network;
    this.storage = new NodeStorage({ poolRoot: join(stateDir, "pools"), sharedDirs: this.sharedDirs });
  }

  /** Serves vmm.v1 (VmService and StorageService, NetworkService with `network`) on `port` (0: a free one) and links to the control plane at `cpUrl`; with `tls`, as an enrolled agent (mutual TLS both ways). */
  async start(cpUrl: string, port = 0, tls?: AgentTls): Promise<void> {
    await this.serve(port, tls);
    this.link = startControlPlaneLink({ controlPlane: cpUrl, agentUrl: this.server.url, nodeName: this.name, stateDir: this.stateDir, backend: this.backend, log: silentLogger, heartbeatMs: this.heartbeatMs, fenceTarget: fenceTargetOf(this.manager, this.backend, this.routerHost), fenceCheckMs: 100, storageCapabilities: () => this.capabilities(), ...(tls ? { tls } : {}) });
  }

  /**
   * Serves vmm.v1 without a control plane (no link: `link` stays unset): for a test that
   * drives the agent's services itself, e.g. NetworkService, which a control plane's
   * network controller would otherwise own (it deletes what no plan of its wants).
   */
  async startStandalone(port = 0): Promise<void> {
    await this.serve(port);
  }

  private async serve(port: number, tls?: AgentTls): Promise<void> {
    const net = this.network;
    // Converges from its state file at once, as an agent process's does.
    const host = net ? new NetworkHost({ stateDir: this.stateDir, netns: net.netns, resyncMs: net.resyncMs ?? 30_000 }) : undefined;
    await host?.start();
    this.networkHost = host;
    const physical = net?.physicalNetworks ?? new Map<string, string>();
    const routers = net ? new RouterHost({ stateDir: this.stateDir, netns: net.netns, physicalNetworks: physical, resyncMs: net.resyncMs ?? 30_000 }) : undefined;
    await routers?.start({ fenced: await pastFenceDeadline(this.stateDir) });
    this.routerHost = routers;
    const features = net ? () => probeNetworkCapabilities(net.netns, net.underlayAddress, physical) : undefined;
    // Volumes of the agent's pools are VM disks too, as on an agent process (VMCP_POOL_ROOT joins the allow-list).
    // The shared directories join the allow-list too (VmManager adds them), and decide what a migration copies.
    this.manager = new VmManager({ backend: this.backend, ...(host ? { portTaps: (id: string) => host.portTap(id) } : {}), ...(net?.underlayAddress ? { migrationHost: net.underlayAddress } : {}), imageDirs: [...this.imageDirs, join(this.stateDir, "pools")], sharedDirs: this.sharedDirs });
    await this.manager.start();
    const secure = tls ? { tls } : {};
    this.server = await startAgentServer(this.manager, { host: "127.0.0.1", port, log: silentLogger, graceMs: 100, storage: this.storage, problem: () => this.link?.problem(), ...(host && features ? { network: { host, features, ...(routers ? { routers } : {}) } } : {}), ...secure });
    this.features = features;
  }

  /** The node capabilities the link registers: the storage's, and the available network features. */
  private async capabilities(): Promise<string[]> {
    return [...(await this.storage.capabilityNames()), ...(this.features ? (await this.features()).features.filter((f) => f.available).map((f) => f.name) : [])];
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

  /** What a dead agent looks like from outside: no answers, no heartbeats (its VMs live on, and its networks' dnsmasq). */
  async kill(): Promise<void> {
    await this.link?.stop();
    await this.server.close();
    await this.routerHost?.close();
    await this.networkHost?.close(false);
  }

  /**
   * The end of a test: as {@link kill}, and the networks' dnsmasq processes are stopped
   * too. The backend (and its VMs) stays the caller's to close; the namespace's links stay
   * until the test deletes the namespace.
   */
  async stop(): Promise<void> {
    await this.link?.stop();
    await this.server?.close();
    await this.routerHost?.close();
    await this.networkHost?.close(true);
  }
}

/**
 * A TestAgent running the QEMU backend (TCG, no KVM) with its state under `stateDir` and
 * `imageDirs` allowed (a test guest's imageDir): for tests of packages that do not depend
 * on the agent themselves (the CLI's). `sharedDirs`: storage the other agents reach too
 * (VMCP_SHARED_DIRS), so that a guest booting from there can live-migrate between them.
 */
export function qemuTestAgent(stateDir: string, name: string, imageDirs: readonly string[], sharedDirs?: readonly string[]): TestAgent<QemuBackend> {
  return new TestAgent(new QemuBackend({ stateDir: join(stateDir, "qemu"), kvm: false, imageDirs }), stateDir, name, { imageDirs, ...(sharedDirs ? { sharedDirs } : {}) });
}
