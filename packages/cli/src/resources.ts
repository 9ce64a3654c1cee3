import type { DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { UsageError } from "./errors.js";
import { AuditService } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_service_pb.js";
import { MigrationService } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_service_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { EventService } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { LoadBalancerService } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { VpnServiceManager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { QuotaService } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { col, nodeCol, type Column } from "./output.js";

/** A flag that sets part of a request's JSON form (see commands.ts: ctx resolves names to ids). */
export interface FlagDef {
  /** commander's spelling: "--cpus <n>". */
  readonly flags: string;
  readonly about: string;
  /** Repeatable: each use adds a value. */
  readonly many?: boolean;
  readonly apply: (req: Json, value: never, ctx: FlagContext) => void | Promise<void>;
}

export type Json = Record<string, unknown>;

export interface FlagContext {
  /** The id of a resource named by a name, an id or an id prefix. */
  resolve(resource: string, ref: string): Promise<string>;
  readFile(path: string): Promise<string>;
}

/** An action on one resource: `quantix vm start NAME`. */
export interface ActionDef {
  readonly name: string;
  readonly about: string;
  readonly rpc: string;
  /** The request field naming the resource ("id" unless said). */
  readonly idField?: string;
  readonly flags?: readonly FlagDef[];
  /** Positional arguments after the resource, each setting a request field (resolved when `resource` is given). */
  readonly args?: readonly { readonly name: string; readonly field: string; readonly resource?: string; readonly many?: boolean; readonly transform?: (v: string) => unknown }[];
  /** --wait: the states (localName of the state enum) that end the wait; "deleted" for gone. */
  readonly waitFor?: readonly string[];
}

/** One resource of the API, as the CLI shows it: the same commands for every one. */
export interface ResourceDef {
  readonly name: string;
  readonly aliases: readonly string[];
  /** "VM", "volume": for messages. */
  readonly title: string;
  readonly service: DescService;
  readonly list: string;
  readonly get?: string;
  readonly create?: string;
  readonly delete?: string;
  readonly watch?: string;
  /** The entity field that is its name ("name", "username", "address", "hostname"). */
  readonly nameField?: string;
  /** The request field of get/delete naming it ("id" unless said). */
  readonly idField?: string;
  readonly columns: readonly Column[];
  readonly wide: readonly Column[];
  /** The state's path and the states that are failures (--wait stops with the reason). */
  readonly state?: { readonly path: string; readonly failed: readonly string[]; readonly reason: readonly string[] };
  readonly createFlags?: readonly FlagDef[];
  /** The positional argument of create, if any, and the request field it sets. */
  readonly createArg?: { readonly name: string; readonly field: string } | null;
  /** --wait on create: the states that end it. */
  readonly createWaitFor?: readonly string[];
  readonly listFlags?: readonly FlagDef[];
  readonly actions?: readonly ActionDef[];
  /** Not listed with a project filter (nodes, pools, users...). */
  readonly global?: boolean;
}

const setPath = (req: Json, path: string, value: unknown): void => {
  const segs = path.split(".");
  let cur = req;
  for (const s of segs.slice(0, -1)) {
    if (typeof cur[s] !== "object" || cur[s] === null) cur[s] = {};
    cur = cur[s] as Json;
  }
  cur[segs[segs.length - 1]!] = value;
};
export { setPath };

const pushPath = (req: Json, path: string, value: unknown): void => {
  const segs = path.split(".");
  let cur = req;
  for (const s of segs.slice(0, -1)) {
    if (typeof cur[s] !== "object" || cur[s] === null) cur[s] = {};
    cur = cur[s] as Json;
  }
  const last = segs[segs.length - 1]!;
  if (!Array.isArray(cur[last])) cur[last] = [];
  (cur[last] as unknown[]).push(value);
};

/** The first element of a request's list field (made when missing), for flags that describe one item. */
const first = (req: Json, field: string): Json => {
  if (!Array.isArray(req[field]) || (req[field] as unknown[]).length === 0) req[field] = [{}];
  return (req[field] as Json[])[0]!;
};

/** "4GiB", "512MiB", "512M", "2G", "1024" (MiB) → MiB. */
export function parseMib(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(k|ki|kib|m|mi|mib|mb|g|gi|gib|gb|t|ti|tib|tb)?$/i.exec(v.trim());
  if (!m) throw new Error(`'${v}' is not a size: write 512MiB, 4GiB, 2G or a number of MiB`);
  const n = Number(m[1]);
  const unit = (m[2] ?? "mib").toLowerCase()[0];
  const mib = unit === "k" ? n / 1024 : unit === "m" ? n : unit === "g" ? n * 1024 : n * 1024 * 1024;
  if (!Number.isInteger(mib) || mib <= 0) throw new Error(`'${v}' is not a whole positive number of MiB`);
  return mib;
}

/** "10GiB", "10G", "10" (GiB) → GiB. */
export function parseGib(v: string): number {
  const m = /^(\d+)\s*(g|gi|gib|gb)?$/i.exec(v.trim());
  if (!m || Number(m[1]) <= 0) throw new Error(`'${v}' is not a size in GiB: write 10GiB, 10G or 10`);
  return Number(m[1]);
}

export function positiveInt(v: string, what: string): number {
  if (!/^\d+$/.test(v) || Number(v) <= 0) throw new UsageError(`${what} '${v}' is not a positive whole number`);
  return Number(v);
}

/** A whole number, zero allowed (a byte count where 0 means none). */
export function nonNegativeInt(v: string, what: string): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`${what} '${v}' is not a whole number`);
  return Number(v);
}

/** "bridge" → "NETWORK_TYPE_BRIDGE": an enum's JSON name from its short form. */
export const enumName = (prefix: string, v: string) => (v.toUpperCase().startsWith(prefix) ? v.toUpperCase() : `${prefix}${v.toUpperCase().replace(/-/g, "_")}`);

/** `--label k=v` (repeatable) into a request's labels. */
const labelFlag = (path = "labels"): FlagDef => ({
  flags: "-l, --label <key=value>",
  about: "a label (repeatable)",
  many: true,
  apply: (req, v: string) => {
    const i = v.indexOf("=");
    if (i <= 0) throw new Error(`--label '${v}' must be key=value`);
    setPath(req, `${path}.${v.slice(0, i)}`, v.slice(i + 1));
  },
});
const descriptionFlag: FlagDef = { flags: "--description <text>", about: "a description", apply: (req, v: string) => setPath(req, "description", v) };
const labelFilter: FlagDef = { ...labelFlag(), flags: "-l, --label <key=value>", about: "only those with this label (repeatable)" };

const STATE_FAILED_VM = ["ERROR", "CRASHED"];

/** Every resource the CLI knows: one entry each. */
export const RESOURCES: readonly ResourceDef[] = [
  {
    name: "vm",
    aliases: ["vms", "server", "instance"],
    title: "VM",
    service: VMService,
    list: "listVMs",
    get: "getVM",
    create: "createVM",
    delete: "deleteVM",
    watch: "watchVMs",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("STATE", "status.state"), col("CPUS", "spec.cpu.cores"), col("MEMORY", "spec.memory.sizeMib", "mib"), nodeCol("NODE", "status.nodeId"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("IPS", "status.ipAddresses"), col("HYPERVISOR", "status.hypervisor"), col("LABELS", "labels"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: STATE_FAILED_VM, reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["STOPPED", "RUNNING"],
    createFlags: [
      { flags: "--cpus <n>", about: "vCPUs (spec.cpu.cores)", apply: (r, v: string) => setPath(r, "spec.cpu.cores", positiveInt(v, "--cpus")) },
      { flags: "--memory <size>", about: "memory: 512MiB, 4GiB (spec.memory.sizeMib)", apply: (r, v: string) => setPath(r, "spec.memory.sizeMib", String(parseMib(v))) },
      {
        flags: "--image <image>",
        about: "boot disk from this image (name or id)",
        apply: async (r, v: string, ctx) => pushPath(r, "spec.disks", { id: "root", imageId: await ctx.resolve("image", v), bootIndex: 1 }),
      },
      { flags: "--disk-size <size>", about: "the boot disk's size in GiB (with --image)", apply: (r, v: string) => {
        const disks = ((r["spec"] as Json | undefined)?.["disks"] as Json[] | undefined) ?? [];
        const root = disks.find((d) => d["id"] === "root");
        if (!root) throw new Error("--disk-size needs --image");
        root["sizeGib"] = String(parseGib(v));
      } },
      {
        flags: "--network <network>",
        about: "a NIC on this network (name or id; repeatable)",
        many: true,
        apply: async (r, v: string, ctx) => {
          const nics = (((r["spec"] as Json | undefined)?.["nics"] as unknown[]) ?? []).length;
          pushPath(r, "spec.nics", { id: `eth${nics}`, networkId: await ctx.resolve("network", v) });
        },
      },
      { flags: "--cloud-init <file>", about: "cloud-init user data from this file", apply: async (r, v: string, ctx) => setPath(r, "spec.provisioning.cloudInit.userData", await ctx.readFile(v)) },
      { flags: "--node <node>", about: "place it on this node (name or id)", apply: async (r, v: string, ctx) => setPath(r, "nodeId", await ctx.resolve("node", v)) },
      { flags: "--start", about: "start it once created", apply: (r) => setPath(r, "startOnCreate", true) },
      descriptionFlag,
      labelFlag(),
    ],
    listFlags: [
      { flags: "--node <node>", about: "only VMs on this node", apply: async (r, v: string, ctx) => setPath(r, "nodeId", await ctx.resolve("node", v)) },
      { flags: "--state <state>", about: "only VMs in this state (repeatable)", many: true, apply: (r, v: string) => pushPath(r, "states", v.toUpperCase()) },
      labelFilter,
    ],
    actions: [
      { name: "start", about: "start a VM", rpc: "startVM", waitFor: ["RUNNING"] },
      {
        name: "stop",
        about: "stop a VM (ACPI shutdown; --force powers it off)",
        rpc: "stopVM",
        waitFor: ["STOPPED"],
        flags: [
          { flags: "--force", about: "power off at once", apply: (r) => setPath(r, "force", true) },
          { flags: "--grace <seconds>", about: "how long the guest may take to shut down", apply: (r, v: string) => setPath(r, "timeoutSec", positiveInt(v, "--grace")) },
        ],
      },
      { name: "reboot", about: "reboot a VM", rpc: "rebootVM", waitFor: ["RUNNING"], flags: [{ flags: "--force", about: "reset instead of an ACPI reboot", apply: (r) => setPath(r, "force", true) }] },
      { name: "pause", about: "pause a VM's vCPUs", rpc: "pauseVM", waitFor: ["PAUSED"] },
      { name: "resume", about: "resume a paused or suspended VM", rpc: "resumeVM", waitFor: ["RUNNING"] },
      { name: "suspend", about: "suspend a VM to disk", rpc: "suspendVM", waitFor: ["SUSPENDED"] },
    ],
  },
  {
    name: "node",
    aliases: ["nodes", "host", "hypervisor"],
    title: "node",
    service: NodeService,
    list: "listNodes",
    get: "getNode",
    delete: "decommissionNode",
    watch: "watchNodes",
    nameField: "hostname",
    global: true,
    columns: [col("ID", "id"), col("HOSTNAME", "hostname"), col("PHASE", "status.phase"), col("SCHEDULABLE", "spec.schedulable"), col("VMS", "status.vmIds", "count"), col("CPUS", "spec.cpu.logicalCpus"), col("MEMORY", "spec.memory.totalMib", "mib")],
    wide: [col("IP", "managementIp"), col("HYPERVISOR", "status.hypervisor.type"), col("AGENT", "status.agentVersion"), col("LABELS", "labels")],
    state: { path: "status.phase", failed: [], reason: [] },
    listFlags: [labelFilter],
    actions: [
      { name: "enable", about: "make a node schedulable", rpc: "enableNode" },
      { name: "disable", about: "make a node unschedulable (its VMs keep running)", rpc: "disableNode" },
    ],
  },
  {
    name: "volume",
    aliases: ["volumes", "vol"],
    title: "volume",
    service: VolumeService,
    list: "listVolumes",
    get: "getVolume",
    create: "createVolume",
    delete: "deleteVolume",
    watch: "watchVolumes",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("STATE", "status.state"), col("SIZE", "spec.sizeGib", "gib"), col("POOL", "spec.poolId"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), nodeCol("NODE", "status.nodeId"), col("FORMAT", "spec.format"), col("LABELS", "labels"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["AVAILABLE"],
    createFlags: [
      { flags: "--size <gib>", about: "size: 10GiB (spec.sizeGib)", apply: (r, v: string) => setPath(r, "spec.sizeGib", String(parseGib(v))) },
      { flags: "--pool <pool>", about: "storage pool (name or id)", apply: async (r, v: string, ctx) => setPath(r, "spec.poolId", await ctx.resolve("pool", v)) },
      { flags: "--image <image>", about: "from this image (name or id)", apply: async (r, v: string, ctx) => setPath(r, "spec.source.imageId", await ctx.resolve("image", v)) },
      { flags: "--node <node>", about: "on this node (local pools)", apply: async (r, v: string, ctx) => setPath(r, "nodeId", await ctx.resolve("node", v)) },
      descriptionFlag,
      labelFlag(),
    ],
    listFlags: [{ flags: "--vm <vm>", about: "only volumes attached to this VM", apply: async (r, v: string, ctx) => setPath(r, "vmId", await ctx.resolve("vm", v)) }, labelFilter],
    actions: [
      { name: "attach", about: "attach a volume to a VM", rpc: "attachVolume", args: [{ name: "vm", field: "vmId", resource: "vm" }], waitFor: ["IN_USE"], flags: [{ flags: "--disk-id <id>", about: "the disk's id in the VM", apply: (r, v: string) => setPath(r, "diskId", v) }, { flags: "--read-only", about: "read-only", apply: (r) => setPath(r, "readOnly", true) }] },
      { name: "detach", about: "detach a volume from a VM", rpc: "detachVolume", args: [{ name: "vm", field: "vmId", resource: "vm" }], waitFor: ["AVAILABLE"], flags: [{ flags: "--force", about: "even if the guest does not let go", apply: (r) => setPath(r, "force", true) }] },
      { name: "resize", about: "grow a volume", rpc: "resizeVolume", args: [{ name: "size", field: "newSizeGib", transform: (v) => String(parseGib(v)) }], waitFor: ["AVAILABLE", "IN_USE"] },
    ],
  },
  {
    name: "image",
    aliases: ["images", "img"],
    title: "image",
    service: ImageService,
    list: "listImages",
    get: "getImage",
    create: "createImage",
    delete: "deleteImage",
    watch: "watchImages",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("STATE", "status.state"), col("SIZE", "status.sizeBytes", "bytes"), col("FORMAT", "status.storedFormat"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("VISIBILITY", "spec.visibility"), col("OS", "spec.os.distribution"), col("SOURCE", "spec.source.url"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["AVAILABLE"],
    createFlags: [
      { flags: "--source-url <url>", about: "import from this URL (spec.source.url)", apply: (r, v: string) => setPath(r, "spec.source.url", v) },
      { flags: "--pool <pool>", about: "the storage pool that keeps it (default: the default pool)", apply: async (r, v: string, ctx) => setPath(r, "spec.poolId", await ctx.resolve("pool", v)) },
      { flags: "--sha256 <hex>", about: "the expected checksum", apply: (r, v: string) => setPath(r, "spec.source.expectedSha256", v) },
      { flags: "--format <format>", about: "disk format: qcow2, raw, iso...", apply: (r, v: string) => setPath(r, "spec.diskFormat", enumName("IMAGE_FORMAT_", v)) },
      { flags: "--public", about: "visible to every project", apply: (r) => setPath(r, "spec.visibility", "IMAGE_VISIBILITY_PUBLIC") },
      descriptionFlag,
      labelFlag(),
    ],
    listFlags: [labelFilter],
  },
  {
    name: "snapshot",
    aliases: ["snapshots", "snap"],
    title: "snapshot",
    service: SnapshotService,
    list: "listSnapshots",
    get: "getSnapshot",
    create: "createSnapshot",
    delete: "deleteSnapshot",
    watch: "watchSnapshots",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("STATE", "status.state"), col("VM", "spec.vmId"), col("VOLUME", "spec.volumeId"), col("SIZE", "status.sizeBytes", "bytes"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("MEMORY", "spec.includeMemory"), col("CURRENT", "status.current"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["AVAILABLE"],
    createFlags: [
      { flags: "--vm <vm>", about: "snapshot this VM's disks", apply: async (r, v: string, ctx) => setPath(r, "spec.vmId", await ctx.resolve("vm", v)) },
      { flags: "--volume <volume>", about: "snapshot this volume", apply: async (r, v: string, ctx) => setPath(r, "spec.volumeId", await ctx.resolve("volume", v)) },
      { flags: "--memory", about: "include the running VM's memory", apply: (r) => setPath(r, "spec.includeMemory", true) },
      descriptionFlag,
      labelFlag(),
    ],
    listFlags: [{ flags: "--vm <vm>", about: "only this VM's snapshots", apply: async (r, v: string, ctx) => setPath(r, "vmId", await ctx.resolve("vm", v)) }, labelFilter],
    actions: [{ name: "revert", about: "revert to a snapshot", rpc: "revertToSnapshot", waitFor: ["AVAILABLE"], flags: [{ flags: "--start", about: "start the VM afterwards", apply: (r) => setPath(r, "startAfterRevert", true) }] }],
  },
  {
    name: "pool",
    aliases: ["pools", "storage-pool", "storage-pools"],
    title: "storage pool",
    service: StoragePoolService,
    list: "listStoragePools",
    get: "getStoragePool",
    create: "createStoragePool",
    delete: "deleteStoragePool",
    watch: "watchStoragePools",
    nameField: "name",
    global: true,
    columns: [col("ID", "id"), col("NAME", "name"), col("TYPE", "spec.type"), col("STATE", "status.state"), col("CAPACITY", "status.capacityBytes", "bytes"), col("AVAILABLE", "status.availableBytes", "bytes"), col("VOLUMES", "status.volumeCount")],
    wide: [col("DEFAULT", "spec.isDefault"), col("SHARED", "status.shared"), col("NODES", "spec.nodeIds"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["UNAVAILABLE"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["READY"],
    createFlags: [
      { flags: "--type <type>", about: "local-dir, lvm, zfs, ceph-rbd, nfs, iscsi, shared-dir", apply: (r, v: string) => setPath(r, "spec.type", enumName("STORAGE_POOL_TYPE_", v)) },
      { flags: "--node <node>", about: "on this node (repeatable)", many: true, apply: async (r, v: string, ctx) => pushPath(r, "spec.nodeIds", await ctx.resolve("node", v)) },
      descriptionFlag,
      labelFlag(),
    ],
    actions: [{ name: "refresh", about: "re-read a pool's capacity", rpc: "refreshStoragePool", waitFor: ["READY"] }],
  },
  {
    name: "network",
    aliases: ["networks", "net"],
    title: "network",
    service: VirtualNetworkService,
    list: "listVirtualNetworks",
    get: "getVirtualNetwork",
    create: "createVirtualNetwork",
    delete: "deleteVirtualNetwork",
    watch: "watchVirtualNetworks",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("TYPE", "spec.type"), col("CIDR", "spec.cidr"), col("STATE", "status.state"), col("PORTS", "status.portCount"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("GATEWAY", "spec.gatewayIp"), col("SHARED", "spec.shared"), col("VNI", "spec.vni"), col("VLAN", "spec.vlanId"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["ACTIVE"],
    createFlags: [
      { flags: "--type <type>", about: "bridge, vlan, vxlan, isolated, external", apply: (r, v: string) => setPath(r, "spec.type", enumName("NETWORK_TYPE_", v)) },
      { flags: "--cidr <cidr>", about: "the IPv4 subnet: 10.0.0.0/24", apply: (r, v: string) => setPath(r, "spec.cidr", v) },
      { flags: "--gateway <ip>", about: "the gateway address", apply: (r, v: string) => setPath(r, "spec.gatewayIp", v) },
      { flags: "--shared", about: "usable from every project", apply: (r) => setPath(r, "spec.shared", true) },
      descriptionFlag,
      labelFlag(),
    ],
    listFlags: [labelFilter],
  },
  {
    name: "port",
    aliases: ["ports"],
    title: "port",
    service: PortService,
    list: "listPorts",
    get: "getPort",
    create: "createPort",
    delete: "deletePort",
    watch: "watchPorts",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("NETWORK", "spec.networkId"), col("MAC", "spec.macAddress"), col("IPS", "spec.fixedIps"), col("STATE", "status.state"), col("DEVICE", "status.deviceId")],
    wide: [col("PROJECT", "projectId"), col("OWNER", "status.deviceOwner"), nodeCol("NODE", "status.nodeId"), col("SECURITY GROUPS", "spec.securityGroupIds")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createFlags: [
      { flags: "--network <network>", about: "the network (name or id)", apply: async (r, v: string, ctx) => setPath(r, "spec.networkId", await ctx.resolve("network", v)) },
      { flags: "--ip <address>", about: "a fixed IP (repeatable)", many: true, apply: (r, v: string) => pushPath(r, "spec.fixedIps", v) },
      { flags: "--security-group <sg>", about: "a security group (repeatable)", many: true, apply: async (r, v: string, ctx) => pushPath(r, "spec.securityGroupIds", await ctx.resolve("security-group", v)) },
      descriptionFlag,
      labelFlag(),
    ],
    listFlags: [{ flags: "--network <network>", about: "only ports on this network", apply: async (r, v: string, ctx) => setPath(r, "networkId", await ctx.resolve("network", v)) }, labelFilter],
  },
  {
    name: "security-group",
    aliases: ["security-groups", "sg", "secgroup"],
    title: "security group",
    service: SecurityGroupService,
    list: "listSecurityGroups",
    get: "getSecurityGroup",
    create: "createSecurityGroup",
    delete: "deleteSecurityGroup",
    watch: "watchSecurityGroups",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("RULES", "rules", "count"), col("PORTS", "portCount"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("STATELESS", "stateless"), col("DESCRIPTION", "description")],
    createArg: { name: "name", field: "name" },
    createFlags: [{ flags: "--stateless", about: "no connection tracking", apply: (r) => setPath(r, "stateless", true) }, descriptionFlag, labelFlag()],
    listFlags: [labelFilter],
  },
  {
    name: "floating-ip",
    aliases: ["floating-ips", "fip"],
    title: "floating IP",
    service: FloatingIpService,
    list: "listFloatingIps",
    get: "getFloatingIp",
    create: "createFloatingIp",
    delete: "deleteFloatingIp",
    watch: "watchFloatingIps",
    nameField: "address",
    columns: [col("ID", "id"), col("ADDRESS", "address"), col("STATE", "state"), col("PORT", "portId"), col("FIXED IP", "fixedIp"), col("VM", "vmId")],
    wide: [col("PROJECT", "projectId"), col("EXTERNAL NETWORK", "externalNetworkId"), col("ERROR", "errorMessage")],
    state: { path: "state", failed: ["ERROR"], reason: ["errorMessage"] },
    createArg: null,
    createFlags: [
      { flags: "--external-network <network>", about: "the external network (name or id)", apply: async (r, v: string, ctx) => setPath(r, "externalNetworkId", await ctx.resolve("network", v)) },
      { flags: "--address <ip>", about: "this address", apply: (r, v: string) => setPath(r, "address", v) },
      { flags: "--port <port>", about: "associate with this port", apply: async (r, v: string, ctx) => setPath(r, "portId", await ctx.resolve("port", v)) },
      descriptionFlag,
      labelFlag(),
    ],
    actions: [
      { name: "associate", about: "point a floating IP at a port", rpc: "associateFloatingIp", waitFor: ["ACTIVE"], args: [{ name: "port", field: "portId", resource: "port" }], flags: [{ flags: "--fixed-ip <ip>", about: "which of the port's IPs", apply: (r, v: string) => setPath(r, "fixedIp", v) }, { flags: "--reassign", about: "take it from another port", apply: (r) => setPath(r, "reassign", true) }] },
      { name: "disassociate", about: "unhook a floating IP", rpc: "disassociateFloatingIp", waitFor: ["DOWN"] },
    ],
  },
  {
    name: "load-balancer",
    aliases: ["load-balancers", "lb"],
    title: "load balancer",
    service: LoadBalancerService,
    list: "listLoadBalancers",
    get: "getLoadBalancer",
    create: "createLoadBalancer",
    delete: "deleteLoadBalancer",
    watch: "watchLoadBalancers",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("STATE", "status.state"), col("VIP", "spec.vipAddress"), col("LISTENERS", "spec.listeners", "count"), col("POOLS", "spec.pools", "count"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("VIP NETWORK", "spec.vipNetworkId"), col("NODES", "status.nodeIds"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["ACTIVE"],
    createFlags: [
      { flags: "--vip-network <network>", about: "the VIP's network (name or id)", apply: async (r, v: string, ctx) => setPath(r, "spec.vipNetworkId", await ctx.resolve("network", v)) },
      { flags: "--vip-address <ip>", about: "the VIP", apply: (r, v: string) => setPath(r, "spec.vipAddress", v) },
      descriptionFlag,
      labelFlag(),
    ],
    actions: [
      {
        name: "add-member",
        about: "add a member (a VM, or an address) to a pool",
        rpc: "addPoolMembers",
        waitFor: ["ACTIVE"],
        args: [{ name: "pool", field: "poolName" }, { name: "member", field: "members", transform: (v) => [{ name: v }] }],
        flags: [
          { flags: "--vm <vm>", about: "the member VM (name or id)", apply: async (r, v: string, ctx) => {
            first(r, "members")["vmId"] = await ctx.resolve("vm", v);
          } },
          { flags: "--address <ip>", about: "the member's address (instead of --vm)", apply: (r, v: string) => {
            first(r, "members")["address"] = v;
          } },
          { flags: "--port <port>", about: "the member's port", apply: (r, v: string) => {
            first(r, "members")["port"] = positiveInt(v, "--port");
          } },
          { flags: "--weight <n>", about: "its weight", apply: (r, v: string) => {
            first(r, "members")["weight"] = positiveInt(v, "--weight");
          } },
          { flags: "--backup", about: "only used when no other member is healthy", apply: (r) => {
            first(r, "members")["backup"] = true;
          } },
        ],
      },
      { name: "remove-members", about: "remove members from a pool", rpc: "removePoolMembers", waitFor: ["ACTIVE"], args: [{ name: "pool", field: "poolName" }, { name: "member", field: "memberNames", many: true }] },
    ],
  },
  {
    name: "vpn",
    aliases: ["vpns", "vpn-service"],
    title: "VPN service",
    service: VpnServiceManager,
    list: "listVpnServices",
    get: "getVpnService",
    create: "createVpnService",
    delete: "deleteVpnService",
    watch: "watchVpnServices",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("TYPE", "spec.type"), col("STATE", "status.state"), col("ADDRESS", "status.externalAddress"), col("PEERS", "spec.peers", "count")],
    wide: [col("PROJECT", "projectId"), col("NETWORK", "spec.networkId"), col("PORT", "status.listenPort"), nodeCol("NODE", "status.nodeId"), col("ERROR", "status.errorMessage")],
    state: { path: "status.state", failed: ["ERROR"], reason: ["status.errorMessage"] },
    createArg: { name: "name", field: "name" },
    createWaitFor: ["ACTIVE"],
    createFlags: [
      { flags: "--type <type>", about: "wireguard or ipsec", apply: (r, v: string) => setPath(r, "spec.type", enumName("VPN_TYPE_", v)) },
      { flags: "--network <network>", about: "the network it serves (name or id)", apply: async (r, v: string, ctx) => setPath(r, "spec.networkId", await ctx.resolve("network", v)) },
      descriptionFlag,
      labelFlag(),
    ],
    actions: [
      {
        name: "add-peer",
        about: "add a peer (WireGuard: --public-key; IPsec: --psk)",
        rpc: "addVpnPeer",
        waitFor: ["ACTIVE"],
        args: [{ name: "peer", field: "peer", transform: (v) => ({ name: v }) }],
        flags: [
          { flags: "--endpoint <host:port>", about: "where the peer listens", apply: (r, v: string) => setPath(r, "peer.endpoint", v) },
          { flags: "--remote-subnet <cidr>", about: "a subnet behind the peer (repeatable)", many: true, apply: (r, v: string) => pushPath(r, "peer.remoteSubnets", v) },
          { flags: "--public-key <key>", about: "the peer's WireGuard public key", apply: (r, v: string) => setPath(r, "peer.publicKey", v) },
          { flags: "--psk <key>", about: "a pre-shared key", apply: (r, v: string) => setPath(r, "peer.presharedKey", v) },
          { flags: "--keepalive <seconds>", about: "persistent keepalive", apply: (r, v: string) => setPath(r, "peer.persistentKeepaliveSeconds", positiveInt(v, "--keepalive")) },
        ],
      },
      { name: "remove-peer", about: "remove a peer", rpc: "removeVpnPeer", waitFor: ["ACTIVE"], args: [{ name: "peer", field: "peerName" }] },
    ],
  },
  {
    name: "project",
    aliases: ["projects"],
    title: "project",
    service: ProjectService,
    list: "listProjects",
    get: "getProject",
    create: "createProject",
    delete: "deleteProject",
    nameField: "name",
    global: true,
    columns: [col("ID", "id"), col("NAME", "name"), col("DESCRIPTION", "description"), col("AGE", "createdAt", "age")],
    wide: [col("LABELS", "labels")],
    createArg: { name: "name", field: "name" },
    createFlags: [descriptionFlag, labelFlag()],
  },
  {
    name: "user",
    aliases: ["users"],
    title: "user",
    service: IdentityService,
    list: "listUsers",
    get: "getUser",
    create: "createUser",
    delete: "deleteUser",
    nameField: "username",
    global: true,
    columns: [col("ID", "id"), col("USERNAME", "username"), col("DISPLAY NAME", "displayName"), col("ADMIN", "systemAdmin"), col("AGE", "createdAt", "age")],
    wide: [col("CREATED BY", "createdBy"), col("PASSWORD CHANGED", "passwordChangedAt", "time")],
    createArg: { name: "username", field: "username" },
    createFlags: [
      { flags: "--display-name <name>", about: "the name shown", apply: (r, v: string) => setPath(r, "displayName", v) },
      { flags: "--admin", about: "a system admin", apply: (r) => setPath(r, "systemAdmin", true) },
      { flags: "--password-stdin", about: "read the password from stdin (first line)", apply: () => undefined },
    ],
  },
  {
    name: "service-account",
    aliases: ["service-accounts", "sa"],
    title: "service account",
    service: IdentityService,
    list: "listServiceAccounts",
    create: "createServiceAccount",
    delete: "deleteServiceAccount",
    nameField: "name",
    global: true,
    columns: [col("ID", "id"), col("NAME", "name"), col("ADMIN", "systemAdmin"), col("DESCRIPTION", "description"), col("AGE", "createdAt", "age")],
    wide: [col("CREATED BY", "createdBy")],
    createArg: { name: "name", field: "name" },
    createFlags: [{ flags: "--admin", about: "a system admin", apply: (r) => setPath(r, "systemAdmin", true) }, descriptionFlag],
  },
  {
    name: "token",
    aliases: ["tokens"],
    title: "token",
    service: IdentityService,
    list: "listTokens",
    create: "createToken",
    delete: "revokeToken",
    nameField: "name",
    columns: [col("ID", "id"), col("NAME", "name"), col("OWNER", "ownerId"), col("PROJECT", "projectId"), col("ROLE", "role"), col("EXPIRES", "expiresAt", "time"), col("REVOKED", "revokedAt", "time")],
    wide: [col("OWNER TYPE", "ownerType"), col("ADMIN", "systemAdmin"), col("SCOPES", "scopes")],
    createArg: { name: "name", field: "name" },
    createFlags: [
      { flags: "--service-account <sa>", about: "a token of this service account (default: yours)", apply: async (r, v: string, ctx) => setPath(r, "serviceAccountId", await ctx.resolve("service-account", v)) },
      { flags: "--role <role>", about: "reader, member or admin in the project", apply: (r, v: string) => setPath(r, "role", enumName("ROLE_", v)) },
      { flags: "--admin", about: "system admin", apply: (r) => setPath(r, "systemAdmin", true) },
      { flags: "--ttl <seconds>", about: "lifetime (0: 90 days)", apply: (r, v: string) => setPath(r, "ttlSec", v) },
    ],
  },
  {
    name: "quota",
    aliases: ["quotas"],
    title: "quota",
    service: QuotaService,
    list: "listQuotas",
    get: "getQuota",
    watch: "watchQuotas",
    idField: "projectId",
    columns: [col("PROJECT", "projectId"), col("VMS", "limits.vms"), col("VCPUS", "limits.vcpus"), col("MEMORY", "limits.memoryMib", "mib"), col("VOLUMES", "limits.volumes"), col("VOLUME GIB", "limits.volumeGib"), col("NETWORKS", "limits.networks"), col("FLOATING IPS", "limits.floatingIps")],
    wide: [col("USED VMS", "used.vms"), col("USED VCPUS", "used.vcpus"), col("USED MEMORY", "used.memoryMib", "mib")],
  },
  {
    name: "event",
    aliases: ["events"],
    title: "event",
    service: EventService,
    list: "listEvents",
    watch: "watchEvents",
    columns: [col("TIME", "time", "time"), col("KIND", "objectKind"), col("OBJECT", "objectName"), col("TYPE", "type"), col("REASON", "reason"), col("MESSAGE", "message")],
    wide: [col("ID", "id"), col("OBJECT ID", "objectId"), nodeCol("NODE", "nodeId"), col("ACTOR", "actor")],
    listFlags: [
      { flags: "--kind <kind>", about: "only events of this kind of object (VirtualMachine, Node...)", apply: (r, v: string) => setPath(r, "objectKind", v) },
      { flags: "--object <id>", about: "only events of this object id", apply: (r, v: string) => setPath(r, "objectId", v) },
    ],
  },
  {
    name: "audit",
    aliases: ["audit-records"],
    title: "audit record",
    service: AuditService,
    list: "listAuditRecords",
    watch: "watchAuditRecords",
    global: false,
    columns: [col("TIME", "time", "time"), col("PRINCIPAL", "principal.name"), col("PROCEDURE", "procedure"), col("CODE", "code"), col("TARGETS", "targetIds")],
    wide: [col("ID", "id"), col("PROJECT", "projectId"), col("SOURCE", "sourceAddress"), col("MS", "durationMs")],
    listFlags: [{ flags: "--procedure <name>", about: "only calls of this RPC", apply: (r, v: string) => setPath(r, "procedure", v) }],
  },
  {
    name: "migration",
    aliases: ["migrations"],
    title: "migration",
    service: MigrationService,
    list: "listMigrations",
    get: "getMigration",
    watch: "watchMigrations",
    columns: [col("ID", "id"), col("VM", "vmId"), col("PHASE", "status.phase"), col("SOURCE", "status.sourceNodeId"), col("TARGET", "status.targetNodeId"), col("TRANSFERRED", "status.transferredBytes", "bytes"), col("AGE", "createdAt", "age")],
    wide: [col("PROJECT", "projectId"), col("DOWNTIME MS", "status.downtimeMs"), col("REASON", "status.reason"), col("MESSAGE", "status.message")],
    state: { path: "status.phase", failed: ["FAILED", "CANCELLED"], reason: ["status.message", "status.reason"] },
    listFlags: [{ flags: "--vm <vm>", about: "only this VM's migrations", apply: async (r, v: string, ctx) => setPath(r, "vmId", await ctx.resolve("vm", v)) }],
    actions: [{ name: "cancel", about: "cancel a migration", rpc: "cancelMigration", waitFor: ["CANCELLED", "SUCCEEDED"] }],
  },
];

export function resourceByName(name: string): ResourceDef | undefined {
  return RESOURCES.find((r) => r.name === name || r.aliases.includes(name));
}

export function method(r: ResourceDef, localName: string): DescMethod {
  const m = r.service.methods.find((x) => x.localName === localName);
  if (!m) throw new Error(`${r.service.typeName} has no method ${localName}`);
  return m;
}

/** The list response's repeated field of entities (vms, nodes, ...). */
export function listField(r: ResourceDef): { name: string; schema: DescMessage } {
  const out = method(r, r.list).output;
  const f = out.fields.find((x) => x.fieldKind === "list" && x.listKind === "message");
  if (!f || f.fieldKind !== "list" || f.listKind !== "message") throw new Error(`${out.typeName} has no repeated message field`);
  return { name: f.localName, schema: f.message };
}

export function schemaOf(r: ResourceDef): DescMessage {
  return listField(r).schema;
}

/** The watch update's field holding the entity, and its type field. */
export function watchField(r: ResourceDef): string | undefined {
  if (!r.watch) return undefined;
  const schema = schemaOf(r);
  const out = method(r, r.watch).output;
  return out.fields.find((x) => x.fieldKind === "message" && x.message.typeName === schema.typeName)?.localName;
}
