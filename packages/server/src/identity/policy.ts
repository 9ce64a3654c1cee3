import { DEFAULT_PROJECT_ID, FLOATING_IP_KIND, VPN_SERVICE_KIND, IMAGE_KIND, LOAD_BALANCER_KIND, MIGRATION_KIND, PORT_KIND, SECURITY_GROUP_KIND, SNAPSHOT_KIND, VIRTUAL_NETWORK_KIND, VM_KIND, VOLUME_KIND, type Kind, type ProjectRole, type Resource, type Scope } from "@quantix/core";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { NetworkService } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { StorageService } from "@quantix/api/gen/vmm/v1/storage_pb.js";

/**
 * Where a project-scoped RPC finds the project it acts in:
 * - `request`: a field of the request names it (`project_id`; `id` of ProjectService),
 *   `dflt` when empty; `hide` answers NOT_FOUND to a caller with no role there (Get/Update
 *   of the project itself: its existence is not told to strangers);
 * - `object`: the request's `field` is the id of an object of `kind`, whose project counts;
 *   a caller with no role there gets NOT_FOUND, as for a missing object (OpenStack's 404);
 *   `after`: checked on the response (a read returns the object: no extra lookup);
 * - `target`: as `object`, for a request that names one of several kinds of object
 *   (`pick` finds which, e.g. CreateSnapshot's spec.volume_id or spec.vm_id);
 * - `list`: a List or Watch, filtered to the projects where the caller has the role (a
 *   `project_id` the request names must be one); `cluster` adds objects of no project
 *   (events of nodes);
 * - `any-project`: objects of no project (the MemoryGateway's documents): the role in any
 *   project lets the call through (a service not built yet uses it too, until its own
 *   target comes with it).
 */
export type ProjectTarget =
  | { readonly from: "request"; readonly field: string; readonly dflt?: string; readonly hide?: boolean }
  | { readonly from: "object"; readonly kind: Kind<Resource>; readonly field: string; readonly after?: boolean }
  | { readonly from: "target"; readonly pick: (msg: Readonly<Record<string, unknown>>) => { readonly kind: Kind<Resource>; readonly id: string } | undefined }
  | { readonly from: "list"; readonly cluster?: boolean }
  | { readonly from: "any-project" }
  /** The first of `targets` whose field the request sets (a oneof: ImportImage's image_id or create); none set: the handler says what is missing. */
  | { readonly from: "either"; readonly targets: readonly (ProjectTarget & { readonly from: "request" | "object" })[] };

/** Who may call an RPC. */
export type Policy = (
  | /** Anyone, even without credentials. */ { readonly access: "public" }
  | /** Any authenticated caller; the handler narrows (its own password, its own tokens). */ { readonly access: "authenticated" }
  | /** Any authenticated caller: cluster-wide objects that are no secret (nodes, pools). */ { readonly access: "cluster-read" }
  | /** System administrators only. */ { readonly access: "system-admin" }
  | /** A node's enrolled agent (for its own node) or a system administrator. */ { readonly access: "agent" }
  | /** A role in the project the call acts in. */ { readonly access: "project"; readonly role: ProjectRole; readonly target: ProjectTarget }
) & {
  /** The token scope the call needs when the caller's token is limited to scopes (the MemoryGateway's). */
  readonly scope?: Scope;
};

const pub: Policy = { access: "public" };
const authed: Policy = { access: "authenticated" };
const clusterRead: Policy = { access: "cluster-read" };
const admin: Policy = { access: "system-admin" };
const agent: Policy = { access: "agent" };
const volume = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: VOLUME_KIND as unknown as Kind<Resource>, field, after } });
const image = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: IMAGE_KIND as unknown as Kind<Resource>, field, after } });
const vm = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: VM_KIND as unknown as Kind<Resource>, field, after } });
const network = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: VIRTUAL_NETWORK_KIND as unknown as Kind<Resource>, field, after } });
const port = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: PORT_KIND as unknown as Kind<Resource>, field, after } });
const group = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: SECURITY_GROUP_KIND as unknown as Kind<Resource>, field, after } });
const fip = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: FLOATING_IP_KIND as unknown as Kind<Resource>, field, after } });
const lb = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: LOAD_BALANCER_KIND as unknown as Kind<Resource>, field, after } });
const vpn = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: VPN_SERVICE_KIND as unknown as Kind<Resource>, field, after } });
const snapshot = (role: ProjectRole, field = "id", after = false): Policy => ({ access: "project", role, target: { from: "object", kind: SNAPSHOT_KIND as unknown as Kind<Resource>, field, after } });
/** CreateSnapshot acts in the project of the volume or VM it snapshots. */
const snapshotTarget = (role: ProjectRole): Policy => ({
  access: "project",
  role,
  target: {
    from: "target",
    pick: (msg) => {
      const t = (msg["spec"] as { target?: { case?: string; value?: unknown } } | undefined)?.target;
      if (t?.case === "volumeId" && typeof t.value === "string") return { kind: VOLUME_KIND as unknown as Kind<Resource>, id: t.value };
      if (t?.case === "vmId" && typeof t.value === "string") return { kind: VM_KIND as unknown as Kind<Resource>, id: t.value };
      return undefined;
    },
  },
});
const list = (role: ProjectRole = "reader", cluster = false): Policy => ({ access: "project", role, target: { from: "list", cluster } });
const inRequest = (role: ProjectRole, field = "project_id", o: { dflt?: string; hide?: boolean } = {}): Policy => ({ access: "project", role, target: { from: "request", field, ...o } });
const anyProject = (role: ProjectRole, scope?: Scope): Policy => ({ access: "project", role, target: { from: "any-project" }, ...(scope ? { scope } : {}) });

const VMS = "Quantixkvm.compute.v1.VMService";
const NODES = "Quantixkvm.compute.v1.NodeService";
const MIGRATIONS = "Quantixkvm.compute.v1.MigrationService";
const EVENTS = "Quantixkvm.event.v1.EventService";
const IDENTITY = "Quantixkvm.identity.v1.IdentityService";
const QUOTAS = "Quantixkvm.quota.v1.QuotaService";
const AUDIT = "Quantixkvm.audit.v1.AuditService";
const PROJECTS = "Quantixkvm.identity.v1.ProjectService";
const DOM = "virtualdom.v1.MemoryGateway";
const VOLUMES = "Quantixkvm.storage.v1.VolumeService";
const SNAPSHOTS = "Quantixkvm.storage.v1.SnapshotService";
const IMAGES = "Quantixkvm.storage.v1.ImageService";
const NETWORKS = "Quantixkvm.network.v1.VirtualNetworkService";
const FIPS = "Quantixkvm.network.v1.FloatingIpService";
const VPNS = "Quantixkvm.network.v1.VpnServiceManager";
const LBS = "Quantixkvm.network.v1.LoadBalancerService";
const PORTS = "Quantixkvm.network.v1.PortService";
const GROUPS = "Quantixkvm.network.v1.SecurityGroupService";

/**
 * The policy of every RPC of every service the control plane serves or lists, by
 * procedure: one declaration, enforced by the authorization interceptor on every
 * protocol path; policy.test.ts fails for an RPC of the served descriptors without one.
 * docs/api/identity.md has it as a table.
 */
export const POLICY: Readonly<Record<string, Policy>> = {
  // The reflection services describe the API, which is public (the proto files are).
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": pub,
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": pub,

  [`${IDENTITY}/Login`]: pub,
  [`${IDENTITY}/WhoAmI`]: authed,
  [`${IDENTITY}/CreateUser`]: admin,
  [`${IDENTITY}/GetUser`]: authed,
  [`${IDENTITY}/ListUsers`]: admin,
  [`${IDENTITY}/DeleteUser`]: admin,
  [`${IDENTITY}/SetPassword`]: authed,
  [`${IDENTITY}/CreateServiceAccount`]: admin,
  [`${IDENTITY}/ListServiceAccounts`]: admin,
  [`${IDENTITY}/DeleteServiceAccount`]: admin,
  [`${IDENTITY}/CreateToken`]: authed,
  [`${IDENTITY}/ListTokens`]: authed,
  [`${IDENTITY}/RevokeToken`]: authed,
  [`${IDENTITY}/RotateSigningKey`]: admin,
  [`${IDENTITY}/ListSigningKeys`]: admin,

  [`${PROJECTS}/CreateProject`]: admin,
  [`${PROJECTS}/GetProject`]: inRequest("reader", "id", { hide: true }),
  [`${PROJECTS}/ListProjects`]: authed,
  [`${PROJECTS}/UpdateProject`]: inRequest("admin", "id", { hide: true }),
  [`${PROJECTS}/DeleteProject`]: admin,
  [`${PROJECTS}/SetRoleBinding`]: inRequest("admin"),
  [`${PROJECTS}/DeleteRoleBinding`]: inRequest("admin"),
  [`${PROJECTS}/ListRoleBindings`]: list("reader"),

  [`${VMS}/CreateVM`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${VMS}/GetVM`]: vm("reader", "id", true),
  [`${VMS}/ListVMs`]: list(),
  [`${VMS}/UpdateVM`]: vm("member"),
  [`${VMS}/DeleteVM`]: vm("member"),
  [`${VMS}/StartVM`]: vm("member"),
  [`${VMS}/StopVM`]: vm("member"),
  [`${VMS}/RebootVM`]: vm("member"),
  [`${VMS}/PauseVM`]: vm("member"),
  [`${VMS}/ResumeVM`]: vm("member"),
  [`${VMS}/SuspendVM`]: vm("member"),
  // Live migration places a guest on a chosen host: an operator's action (as in Nova).
  [`${VMS}/MigrateVM`]: admin,
  [`${VMS}/WatchVM`]: vm("reader", "vm_id"),
  [`${VMS}/WatchVMs`]: list(),
  [`${VMS}/GetConsoleOutput`]: vm("reader", "vm_id"),
  [`${VMS}/StreamConsole`]: vm("reader", "vm_id"),
  // Typing into a guest acts on it (as RebootVM does); viewing only is StreamConsole's.
  [`${VMS}/AttachConsole`]: vm("member", "attach.vm_id"),
  [`${VMS}/StreamMetrics`]: vm("reader", "vm_id"),

  [`${NODES}/RegisterNode`]: agent,
  [`${NODES}/UpdateHeartbeat`]: agent,
  [`${NODES}/GetNode`]: clusterRead,
  [`${NODES}/ListNodes`]: clusterRead,
  [`${NODES}/WatchNodes`]: clusterRead,
  [`${NODES}/GetNodeMetrics`]: clusterRead,
  [`${NODES}/UpdateNode`]: admin,
  [`${NODES}/DecommissionNode`]: admin,
  [`${NODES}/EnableNode`]: admin,
  [`${NODES}/DisableNode`]: admin,
  [`${NODES}/DrainNode`]: admin,

  // Joining a cluster (ADR 0009): operators make join tokens; Enroll is public, as the
  // join token in its request is the credential (a host has nothing else yet).
  "Quantixkvm.compute.v1.EnrollmentService/CreateJoinToken": admin,
  "Quantixkvm.compute.v1.EnrollmentService/ListJoinTokens": admin,
  "Quantixkvm.compute.v1.EnrollmentService/DeleteJoinToken": admin,
  "Quantixkvm.compute.v1.EnrollmentService/Enroll": pub,

  [`${MIGRATIONS}/GetMigration`]: { access: "project", role: "reader", target: { from: "object", kind: MIGRATION_KIND as unknown as Kind<Resource>, field: "id", after: true } },
  [`${MIGRATIONS}/ListMigrations`]: list(),
  [`${MIGRATIONS}/WatchMigrations`]: list(),
  [`${MIGRATIONS}/CancelMigration`]: admin,

  [`${EVENTS}/ListEvents`]: list("reader", true),
  [`${EVENTS}/WatchEvents`]: list("reader", true),

  // A project's members see its limits and use; only operators set them (a project admin
  // raising its own limit would make them no limits).
  [`${QUOTAS}/GetQuota`]: inRequest("reader"),
  [`${QUOTAS}/ListQuotas`]: list(),
  [`${QUOTAS}/WatchQuotas`]: list(),
  [`${QUOTAS}/SetQuota`]: admin,

  // The audit trail: a project's admins read the calls made in their project; calls of no
  // project (nodes, users, quotas) only system admins.
  [`${AUDIT}/ListAuditRecords`]: list("admin"),
  [`${AUDIT}/WatchAuditRecords`]: list("admin"),

  // The agents' APIs (vmm.v1.VmService, StorageService, NetworkService): the control plane only points
  // to the agents; on an agent, only its control plane calls them. Every RPC of each, by descriptor.
  ...Object.fromEntries([VmService, StorageService, NetworkService].flatMap((svc) => svc.methods.map((m) => [`${svc.typeName}/${m.name}`, admin]))),

  // Storage: pools are the cluster's (operators), volumes, snapshots and images a project's.
  "Quantixkvm.storage.v1.StoragePoolService/CreateStoragePool": admin,
  "Quantixkvm.storage.v1.StoragePoolService/GetStoragePool": clusterRead,
  "Quantixkvm.storage.v1.StoragePoolService/ListStoragePools": clusterRead,
  "Quantixkvm.storage.v1.StoragePoolService/UpdateStoragePool": admin,
  "Quantixkvm.storage.v1.StoragePoolService/DeleteStoragePool": admin,
  "Quantixkvm.storage.v1.StoragePoolService/RefreshStoragePool": admin,
  "Quantixkvm.storage.v1.StoragePoolService/WatchStoragePools": clusterRead,
  // A volume's project decides: readers read, members write; a clone stays in its source's project.
  [`${VOLUMES}/CreateVolume`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${VOLUMES}/GetVolume`]: volume("reader", "id", true),
  [`${VOLUMES}/ListVolumes`]: list(),
  [`${VOLUMES}/WatchVolumes`]: list(),
  [`${VOLUMES}/UpdateVolume`]: volume("member"),
  [`${VOLUMES}/DeleteVolume`]: volume("member"),
  [`${VOLUMES}/ResizeVolume`]: volume("member"),
  [`${VOLUMES}/AttachVolume`]: volume("member"),
  [`${VOLUMES}/DetachVolume`]: volume("member"),
  [`${VOLUMES}/CloneVolume`]: volume("member"),
  // Moving a volume between pools is an operator's action.
  [`${VOLUMES}/MigrateVolume`]: admin,
  // A snapshot is its volume's (or VM's) project's: readers read, members write.
  [`${SNAPSHOTS}/CreateSnapshot`]: snapshotTarget("member"),
  [`${SNAPSHOTS}/GetSnapshot`]: snapshot("reader", "id", true),
  [`${SNAPSHOTS}/ListSnapshots`]: list(),
  [`${SNAPSHOTS}/WatchSnapshots`]: list(),
  [`${SNAPSHOTS}/UpdateSnapshot`]: snapshot("member"),
  [`${SNAPSHOTS}/DeleteSnapshot`]: snapshot("member"),
  [`${SNAPSHOTS}/RevertToSnapshot`]: snapshot("member"),
  [`${IMAGES}/CreateImage`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${IMAGES}/GetImage`]: image("reader", "id", true),
  [`${IMAGES}/ListImages`]: list(),
  [`${IMAGES}/WatchImages`]: list(),
  [`${IMAGES}/UpdateImage`]: image("member"),
  [`${IMAGES}/DeleteImage`]: image("member"),
  // Follows (or retries) an image of the caller's project, or creates one there.
  [`${IMAGES}/ImportImage`]: {
    access: "project",
    role: "member",
    target: {
      from: "either",
      targets: [
        { from: "object", kind: IMAGE_KIND as unknown as Kind<Resource>, field: "image_id" },
        { from: "request", field: "create.project_id", dflt: DEFAULT_PROJECT_ID },
      ],
    },
  },
  // Sends the data of an image of the caller's project: its first message's header names it.
  [`${IMAGES}/UploadImage`]: image("member", "header.image_id"),

  // Networks, ports and security groups are a project's, as volumes: readers read, members write.
  [`${NETWORKS}/CreateVirtualNetwork`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${NETWORKS}/GetVirtualNetwork`]: network("reader", "id", true),
  [`${NETWORKS}/ListVirtualNetworks`]: list(),
  [`${NETWORKS}/WatchVirtualNetworks`]: list(),
  [`${NETWORKS}/UpdateVirtualNetwork`]: network("member"),
  [`${NETWORKS}/DeleteVirtualNetwork`]: network("member"),
  // A port is created in the project the request names, on a network of that project.
  [`${PORTS}/CreatePort`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${PORTS}/GetPort`]: port("reader", "id", true),
  [`${PORTS}/ListPorts`]: list(),
  [`${PORTS}/WatchPorts`]: list(),
  [`${PORTS}/UpdatePort`]: port("member"),
  [`${PORTS}/DeletePort`]: port("member"),
  [`${GROUPS}/CreateSecurityGroup`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${GROUPS}/GetSecurityGroup`]: group("reader", "id", true),
  [`${GROUPS}/ListSecurityGroups`]: list(),
  [`${GROUPS}/WatchSecurityGroups`]: list(),
  [`${GROUPS}/UpdateSecurityGroup`]: group("member"),
  [`${GROUPS}/DeleteSecurityGroup`]: group("member"),
  [`${GROUPS}/AddSecurityGroupRules`]: group("member", "security_group_id"),
  [`${GROUPS}/RemoveSecurityGroupRules`]: group("member", "security_group_id"),
  // Floating IPs belong to the project they are allocated to; the EXTERNAL network they
  // come from is any project's (the service reads it itself).
  [`${FIPS}/CreateFloatingIp`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${FIPS}/GetFloatingIp`]: fip("reader", "id", true),
  [`${FIPS}/ListFloatingIps`]: list(),
  [`${FIPS}/WatchFloatingIps`]: list(),
  [`${FIPS}/UpdateFloatingIp`]: fip("member"),
  [`${FIPS}/DeleteFloatingIp`]: fip("member"),
  [`${FIPS}/AssociateFloatingIp`]: fip("member"),
  [`${FIPS}/DisassociateFloatingIp`]: fip("member"),
  // Load balancers belong to their VIP network's project (the service checks the network is there).
  [`${LBS}/CreateLoadBalancer`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${LBS}/GetLoadBalancer`]: lb("reader", "id", true),
  [`${LBS}/ListLoadBalancers`]: list(),
  [`${LBS}/WatchLoadBalancers`]: list(),
  [`${LBS}/UpdateLoadBalancer`]: lb("member"),
  [`${LBS}/DeleteLoadBalancer`]: lb("member"),
  [`${LBS}/AddPoolMembers`]: lb("member"),
  [`${LBS}/RemovePoolMembers`]: lb("member"),
  [`${LBS}/GetLoadBalancerStats`]: lb("reader"),
  // VPN services belong to their network's project (the service checks the network is there).
  [`${VPNS}/CreateVpnService`]: inRequest("member", "project_id", { dflt: DEFAULT_PROJECT_ID }),
  [`${VPNS}/GetVpnService`]: vpn("reader", "id", true),
  [`${VPNS}/ListVpnServices`]: list(),
  [`${VPNS}/WatchVpnServices`]: list(),
  [`${VPNS}/UpdateVpnService`]: vpn("member"),
  [`${VPNS}/DeleteVpnService`]: vpn("member"),
  [`${VPNS}/AddVpnPeer`]: vpn("member"),
  [`${VPNS}/RemoveVpnPeer`]: vpn("member"),

  // The document gateway (adr-0001): dom.read to read, dom.write to write.
  [`${DOM}/WriteDiff`]: anyProject("member", "dom.write"),
  [`${DOM}/ReadSnapshot`]: anyProject("reader", "dom.read"),
  [`${DOM}/SubscribeChanges`]: anyProject("reader", "dom.read"),
  [`${DOM}/CollaborativeSession`]: anyProject("member", "dom.write"),
  [`${DOM}/ListNodes`]: anyProject("reader", "dom.read"),
  [`${DOM}/ListVersions`]: anyProject("reader", "dom.read"),
  [`${DOM}/DeleteNode`]: anyProject("member", "dom.write"),
};

/** The policy of a procedure ("pkg.Service/Method"), or undefined (then the call is refused). */
export function policyOf(procedure: string): Policy | undefined {
  return POLICY[procedure];
}
