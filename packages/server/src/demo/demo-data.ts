import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, NodeStatus_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { DiskBus, NicModel, PowerState, TaintEffect, TolerationOperator, VirtualMachineSchema, VmStatus_State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { DEFAULT_PROJECT_ID } from "@quantix/core";
import { withCapacity } from "../services/node-service.js";

/** Label that marks the demo's nodes, which run the simulated hypervisor. */
export const DEMO_LABEL = "quantix.io/demo";

/**
 * The taint every simulated demo node carries (`quantix.io/simulated=true:NoSchedule`):
 * a simulated node runs no guest, so only VMs that tolerate it (the demo VMs, and VMs
 * whose spec.placement.tolerations say so on purpose) are placed there. A user's real VM
 * stays PENDING, its Scheduled condition naming the taint, instead of being reported
 * RUNNING on a hypervisor that runs nothing.
 */
export const SIMULATED_TAINT = { key: "quantix.io/simulated", value: "true", effect: TaintEffect.NO_SCHEDULE } as const;

/** The toleration of {@link SIMULATED_TAINT}, carried by the demo VMs. */
export const SIMULATED_TOLERATION = { key: SIMULATED_TAINT.key, operator: TolerationOperator.EQUAL, value: SIMULATED_TAINT.value, effect: TaintEffect.NO_SCHEDULE } as const;

const GIB = 1024n;

function node(n: number, hostname: string, ip: string, cpu: { model: string; sockets: number; cores: number }, memGib: bigint, disk: { name: string; sizeGib: bigint }, nowMs: number): Node {
  const logical = cpu.sockets * cpu.cores * 2;
  const spec = {
    cpu: { model: cpu.model, sockets: cpu.sockets, coresPerSocket: cpu.cores, threadsPerCore: 2, logicalCpus: logical, frequencyMhz: 2600, features: ["vmx", "avx2"] },
    memory: { totalMib: memGib * GIB },
    storage: [{ name: disk.name, model: "NVMe SSD", sizeGib: disk.sizeGib, type: "nvme" }],
    network: [{ name: "eno1", macAddress: `3c:ec:ef:00:00:0${n}`, speedMbps: 25_000, mtu: 1500 }],
    agentEndpoint: "",
    schedulable: true,
    taints: [{ ...SIMULATED_TAINT }],
  };
  const msg = create(NodeSchema, {
    id: `00000000-0000-0000-0001-00000000000${n}`,
    hostname,
    managementIp: ip,
    labels: { [DEMO_LABEL]: "true", rack: `rack-${n}`, "cpu-vendor": cpu.model.startsWith("AMD") ? "amd" : "intel" },
    spec,
    status: {
      phase: NodeStatus_Phase.READY,
      // Version and capabilities arrive when the node's simulated host registers (simulated-nodes.ts).
      hypervisor: { type: "simulated" },
      agentVersion: "in-process",
      lastHeartbeat: timestampFromMs(nowMs),
    },
    createdAt: timestampFromMs(nowMs),
    updatedAt: timestampFromMs(nowMs),
  });
  withCapacity(msg.status!, msg.spec!);
  return msg;
}

/** The seed's three nodes (backend-phase2-core-services.md, "Demo Data"). */
export function demoNodes(nowMs: number): Node[] {
  return [
    node(1, "hypervisor-01", "10.0.0.11", { model: "Intel Xeon Gold 6338", sockets: 2, cores: 32 }, 256n, { name: "nvme0n1", sizeGib: 2048n }, nowMs),
    node(2, "hypervisor-02", "10.0.0.12", { model: "Intel Xeon Gold 6338", sockets: 2, cores: 32 }, 256n, { name: "nvme0n1", sizeGib: 1024n }, nowMs),
    node(3, "hypervisor-03", "10.0.0.13", { model: "AMD EPYC 7763", sockets: 2, cores: 64 }, 512n, { name: "nvme0n1", sizeGib: 4096n }, nowMs),
  ];
}

/** Where the demo's hosts keep images (an agent's default VMCP_IMAGE_DIRS has it too). */
const IMAGE_DIR = "/var/lib/quantix/images";
/** The four demo VMs' names: each has its root disk image on the simulated hosts. */
const DEMO_VM_NAMES = ["web-server-01", "db-server-01", "dev-workstation", "cache-server"] as const;

/**
 * The image files every simulated host has: the demo VMs' root disks, two cloud images
 * and a kernel with its initrd for direct boot. A VM naming any other path is refused by
 * the host, as an agent refuses a file that is not in its image directories.
 */
export const DEMO_IMAGES: readonly string[] = Object.freeze([
  ...DEMO_VM_NAMES.map((n) => `${IMAGE_DIR}/${n}.img`),
  `${IMAGE_DIR}/debian-12-genericcloud-amd64.qcow2`,
  `${IMAGE_DIR}/ubuntu-24.04-server-cloudimg-amd64.img`,
  `${IMAGE_DIR}/vmlinuz`,
  `${IMAGE_DIR}/initrd.img`,
]);

function vm(digit: string, name: string, cores: number, memGib: bigint, running: boolean, nodeN: number, labels: Record<string, string>, diskGib: bigint, nowMs: number): VirtualMachine {
  return create(VirtualMachineSchema, {
    id: Array.from({ length: 5 }, (_, i) => digit.repeat([8, 4, 4, 4, 12][i]!)).join("-"),
    name,
    projectId: DEFAULT_PROJECT_ID,
    labels,
    description: `Demo VM ${name}`,
    spec: {
      cpu: { cores, sockets: 1, threadsPerCore: 1 },
      memory: { sizeMib: memGib * GIB },
      // An image file on the node (host_path), as agent nodes take disks until the storage service brings volumes.
      disks: [{ id: "root", hostPath: `${IMAGE_DIR}/${name}.img`, sizeGib: diskGib, bus: DiskBus.VIRTIO, bootIndex: 1 }],
      nics: [{ id: "eth0", networkId: "default", macAddress: `52:54:00:00:00:${digit}${digit}`, model: NicModel.VIRTIO }],
      desiredPowerState: running ? PowerState.RUNNING : PowerState.STOPPED,
      placement: { tolerations: [{ ...SIMULATED_TOLERATION }] },
    },
    status: {
      state: running ? VmStatus_State.RUNNING : VmStatus_State.STOPPED,
      nodeId: `00000000-0000-0000-0001-00000000000${nodeN}`,
      hypervisor: "simulated",
      observedGeneration: 1n,
      ...(running ? { startedAt: timestampFromMs(nowMs) } : {}),
    },
    createdAt: timestampFromMs(nowMs),
    updatedAt: timestampFromMs(nowMs),
    generation: 1n,
  });
}

/** The seed's four VMs, with the ids the issue fixes (1111..., 2222..., 3333..., 4444...). */
export function demoVms(nowMs: number): VirtualMachine[] {
  const [web, db, dev, cache] = DEMO_VM_NAMES;
  return [
    vm("1", web, 4, 8n, true, 1, { app: "web", env: "production" }, 50n, nowMs),
    vm("2", db, 8, 32n, true, 2, { app: "database", env: "production" }, 500n, nowMs),
    vm("3", dev, 2, 4n, false, 1, { app: "workstation", env: "development" }, 100n, nowMs),
    vm("4", cache, 2, 16n, true, 3, { app: "cache", env: "production" }, 20n, nowMs),
  ];
}
