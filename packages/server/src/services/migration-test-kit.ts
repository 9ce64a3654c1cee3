import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VirtualMachineSchema, VmStatus_State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type MigrationDiskCopy, randomIds, systemClock, type Capability, type HypervisorMigration, type HypervisorPort, type MigrationStatistics, type ObservedPower, type ShutdownOptions, type VmObservation, VM_KIND, NODE_KIND } from "@quantix/core";
import { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { silentLogger } from "@quantix/rpc";
import { MemoryStore } from "../store/memory-store.js";
import { VmMigrationService } from "./vm-migration.js";
import { ControllerManager } from "../runtime/manager.js";
import { VmController } from "../controllers/vm-controller.js";
import { VmScheduler } from "../controllers/vm-scheduler.js";
import { MigrationController } from "../controllers/migration-controller.js";

/** How a fake source node's outgoing migration ends: "complete" moves the guest; a function decides itself. */
export type MigrateBehaviour = (ctx: { vmId: string; source: FakeNode; target: FakeNode; signal: AbortSignal }) => Promise<MigrationStatistics>;

/**
 * A fake node hypervisor with "live-migration" (tests of the control plane's migration
 * logic: races and injected failures). Its VMs are a map of power states; a migration
 * to another FakeNode moves the entry as an agent does (the source's copy goes as soon
 * as the hypervisor completes).
 */
export class FakeNode implements HypervisorPort {
  readonly kind = "fake";
  readonly version = "1";
  readonly capabilities = new Set<Capability>(["live-migration"]);
  readonly vms = new Map<string, ObservedPower>();
  /** The last shutdown each VM got (a graceful stop's timeout is part of the node's state). */
  readonly shutdowns = new Map<string, ShutdownOptions>();
  behaviour: MigrateBehaviour = async ({ vmId, source, target }) => FakeNode.move(vmId, source, target);
  prepareError: Error | undefined;
  /** Disks of a VM on this node's local storage, which a migration copies (planCopies answers them). */
  readonly localDisks = new Map<string, MigrationDiskCopy[]>();
  /** The copies each VM's prepare here was asked to create. */
  readonly preparedCopies = new Map<string, readonly MigrationDiskCopy[]>();
  /** The volume files each VM's prepare here was given (volume id to path on this node). */
  readonly preparedVolumePaths = new Map<string, ReadonlyMap<string, string>>();
  readonly migration: HypervisorMigration;

  constructor(readonly id: string, peers: Map<string, FakeNode>) {
    peers.set(id, this);
    this.migration = {
      planCopies: async (vmId) => this.localDisks.get(vmId) ?? [],
      prepare: async (vmId, _spec, copies = [], volumePaths = new Map()) => {
        if (this.prepareError) throw this.prepareError;
        if (this.vms.has(vmId)) throw new QuantixError("already_exists", `VM '${vmId}' already exists on this host`);
        this.vms.set(vmId, "paused");
        this.preparedCopies.set(vmId, copies);
        this.preparedVolumePaths.set(vmId, volumePaths);
        return { uri: `fake://${id}`, storageUri: copies.length > 0 ? `fake-nbd://${id}` : "" };
      },
      migrate: async (vmId, to, _options, onProgress, signal) => {
        const target = peers.get(to.uri.slice("fake://".length))!;
        const disk = (this.localDisks.get(vmId) ?? []).reduce((n, d) => n + d.virtualSizeBytes, 0n);
        if (to.storageUri) onProgress({ status: "copying-disks", transferredBytes: 0n, totalBytes: 0n, diskTransferredBytes: disk / 2n, diskTotalBytes: disk });
        onProgress({ status: "active", transferredBytes: 0n, totalBytes: 1n << 20n, ...(to.storageUri ? { diskTransferredBytes: disk, diskTotalBytes: disk } : {}) });
        const stats = await this.behaviour({ vmId, source: this, target, signal });
        return to.storageUri ? { ...stats, diskTransferredBytes: disk } : stats;
      },
    };
  }

  /** Completes a migration: the guest runs on the target, and the source's copy is gone. */
  static move(vmId: string, source: FakeNode, target: FakeNode): MigrationStatistics {
    source.vms.delete(vmId);
    target.vms.set(vmId, "running");
    return { transferredBytes: 1n << 20n, downtimeMs: 5, durationMs: 50 };
  }

  async createVM(vmId: string): Promise<void> {
    if (!this.vms.has(vmId)) this.vms.set(vmId, "created");
  }
  async deleteVM(vmId: string): Promise<void> {
    this.vms.delete(vmId);
  }
  async bootVM(vmId: string): Promise<void> {
    this.vms.set(vmId, "running");
  }
  async shutdownVM(vmId: string, options: ShutdownOptions): Promise<void> {
    this.shutdowns.set(vmId, options);
    if (this.vms.has(vmId)) this.vms.set(vmId, "shutdown");
  }
  async pauseVM(vmId: string): Promise<void> {
    this.vms.set(vmId, "paused");
  }
  async resumeVM(vmId: string): Promise<void> {
    this.vms.set(vmId, "running");
  }
  async rebootVM(): Promise<void> {}
  async suspendVM(vmId: string): Promise<void> {
    this.vms.set(vmId, "suspended");
  }
  async observe(vmId: string): Promise<VmObservation> {
    return { vmId, power: this.vms.get(vmId) ?? "absent" };
  }
  async list(): Promise<VmObservation[]> {
    return [...this.vms].map(([vmId, power]) => ({ vmId, power }));
  }
  async ping(): Promise<void> {}
  onChange(): () => void {
    return () => undefined;
  }
}

/** Test settings of the cluster's controllers. */
export interface FakeClusterOptions {
  /** Every migration's timeout. */
  readonly timeoutMs?: number;
  /** How often a quiet migration writes its progress again. */
  readonly touchEveryMs?: number;
  /** false: the controllers start only when start() is called (a control plane restarting onto what is there). */
  readonly started?: boolean;
  /** The nodes' storage (VMs whose disks are volumes). */
  readonly storages?: NodeStorages;
}

/**
 * A store with READY fake nodes (memory in MiB each), their drivers, the controllers that
 * run migrations (the VM controller, the scheduler, the migration controller, on a
 * ControllerManager that leads at once), and the MigrateVM service over them.
 */
export async function fakeCluster(memMib: Record<string, number>, options: FakeClusterOptions = {}) {
  const store = new MemoryStore();
  const drivers = new NodeDrivers();
  const peers = new Map<string, FakeNode>();
  const now = Date.now();
  for (const [id, mem] of Object.entries(memMib)) {
    await store.of(NODE_KIND).create(
      create(NodeSchema, {
        id,
        hostname: `host-${id}`,
        spec: { schedulable: true },
        status: { phase: NodeStatus_Phase.READY, allocatable: { cpuCores: 16, memoryMib: BigInt(mem) }, hypervisor: { type: "fake", capabilities: ["live-migration"] } },
        createdAt: timestampFromMs(now),
        updatedAt: timestampFromMs(now),
      }),
    );
    drivers.attach(id, new FakeNode(id, peers));
  }
  const deps = { store, drivers, clock: systemClock, ids: randomIds, log: silentLogger };
  /** The controllers of one control-plane process. */
  const controlPlane = () => {
    const m = new ControllerManager({ store, log: silentLogger, onLost: () => undefined });
    const vmController = new VmController(deps);
    m.add(vmController, new VmScheduler({ ...deps, strategy: "spread", isConnected: (id) => drivers.has(id) }), new MigrationController({ ...deps, ...options }));
    return { manager: m, vmController };
  };
  let { manager, vmController } = controlPlane();
  if (options.started !== false) await manager.start();
  /** Stops this control plane's controllers and starts a new process's on the same store and nodes. */
  const restart = async () => {
    await manager.stop();
    ({ manager, vmController } = controlPlane());
    await manager.start();
  };
  const migration = new VmMigrationService(deps);
  /** A RUNNING VM of `mem` MiB on `nodeId`, running on that fake node too. */
  const runningVm = async (id: string, nodeId: string, mem = 1024): Promise<VirtualMachine> => {
    peers.get(nodeId)!.vms.set(id, "running");
    return store.of(VM_KIND).create(
      create(VirtualMachineSchema, {
        id,
        name: id,
        projectId: "default",
        generation: 1n,
        spec: { cpu: { cores: 1, sockets: 1, threadsPerCore: 1 }, memory: { sizeMib: BigInt(mem) }, desiredPowerState: PowerState.RUNNING },
        status: { state: VmStatus_State.RUNNING, nodeId, hypervisor: "fake", observedGeneration: 1n },
        createdAt: timestampFromMs(now),
        updatedAt: timestampFromMs(now),
      }),
    );
  };
  return { store, drivers, migration, get vmController() { return vmController; }, node: (id: string) => peers.get(id)!, runningVm, start: () => manager.start(), restart, close: () => manager.stop() };
}
