import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { MigrationSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { NodeSchema, NodeTombstoneSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { EventSchema } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import { JoinTokenSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { AuditRecordSchema } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_pb.js";
import { QuotaSchema } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { ApiTokenSchema, PrincipalType, Role, ServiceAccountSchema, SigningKeySchema, UserSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { CredentialSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/credential_pb.js";
import { StoragePoolSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { ImageSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { SnapshotSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { VirtualNetworkSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { PortSchema } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { SecurityGroupSchema } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { NetworkAllocationSchema } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import { FloatingIpSchema } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { VpnServiceSchema } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { LoadBalancerSchema } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { ProjectSchema, RoleBindingSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import {
  API_TOKEN_KIND,
  AUDIT_RECORD_KIND,
  CREDENTIAL_KIND,
  EVENT_KIND,
  JOIN_TOKEN_KIND,
  MIGRATION_KIND,
  NODE_KIND,
  NODE_TOMBSTONE_KIND,
  PROJECT_KIND,
  QUOTA_KIND,
  ROLE_BINDING_KIND,
  SERVICE_ACCOUNT_KIND,
  SIGNING_KEY_KIND,
  STORAGE_POOL_KIND,
  VOLUME_KIND,
  IMAGE_KIND,
  SNAPSHOT_KIND,
  VIRTUAL_NETWORK_KIND,
  PORT_KIND,
  SECURITY_GROUP_KIND,
  NETWORK_ALLOCATION_KIND,
  FLOATING_IP_KIND,
  VPN_SERVICE_KIND,
  LOAD_BALANCER_KIND,
  USER_KIND,
  VM_KIND,
  type FieldValue,
  type Kind,
  type Resource,
} from "@quantix/core";

/** Values of declared fields, by field name (as Query.where names them). */
export type Values = Readonly<Record<string, FieldValue>>;

/**
 * Builds valid objects of one kind with chosen field values, for the kind contract suite.
 * `scope(tag)` gives values (and a filter) that set a test's objects apart in a shared store.
 */
export interface KindFixture {
  readonly kind: Kind<Resource>;
  make(values: Values, labels?: Record<string, string>): Resource;
  scope(tag: string): { values: Values; labels?: Record<string, string>; where?: Values; labelFilter?: Record<string, string> };
  /** Values that give an object work for its finalizers (kinds with finalizers only). */
  readonly busy?: Values;
}

const ms = (v: FieldValue | undefined, dflt: number) => timestampFromMs(typeof v === "number" ? v : dflt);
const str = (v: FieldValue | undefined, dflt: string) => (typeof v === "string" ? v : dflt);
const int = (v: FieldValue | undefined, dflt: number) => (typeof v === "number" ? v : dflt);
const NOW = 1_700_000_000_000;

const vm: KindFixture = {
  kind: VM_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(VirtualMachineSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `vm-${randomUUID().slice(0, 8)}`),
      labels,
      spec: { cpu: { cores: 1 }, memory: { sizeMib: 512n } },
      status: { state: int(v["state"], 1), nodeId: str(v["node_id"], "") },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
  busy: { node_id: "a-node" },
};

const node: KindFixture = {
  kind: NODE_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(NodeSchema, {
      id: randomUUID(),
      hostname: str(v["hostname"], `h-${randomUUID().slice(0, 8)}`),
      labels,
      spec: { schedulable: typeof v["schedulable"] === "boolean" ? v["schedulable"] : true },
      status: { phase: int(v["phase"], 2) },
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: {}, labels: { scope: tag }, labelFilter: { scope: tag } }),
};

const event: KindFixture = {
  kind: EVENT_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(EventSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      objectKind: str(v["object_kind"], "VM"),
      objectId: str(v["object_id"], randomUUID()),
      type: str(v["type"], "Started"),
      nodeId: str(v["node_id"], ""),
      message: "a test event",
      time: ms(v["time"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const migration: KindFixture = {
  kind: MIGRATION_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(MigrationSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      vmId: str(v["vm_id"], randomUUID()),
      status: { phase: int(v["phase"], 1) },
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

/** A fixture for every kind the control plane has (ALL_KINDS): a new kind adds its own here. */
const nodeTombstone: KindFixture = {
  kind: NODE_TOMBSTONE_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(NodeTombstoneSchema, {
      id: randomUUID(),
      hostname: str(v["hostname"], `h-${randomUUID().slice(0, 8)}`),
      decommissionedAt: ms(v["decommissioned_at"], NOW),
    }),
  scope: (tag) => ({ values: { hostname: tag }, where: { hostname: tag } }),
};

const short = () => randomUUID().slice(0, 8);

const project: KindFixture = {
  kind: PROJECT_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) => create(ProjectSchema, { id: randomUUID(), name: str(v["name"], `p-${short()}`), labels, createdAt: ms(v["created_at"], NOW) }),
  scope: (tag) => ({ values: {}, labels: { scope: tag }, labelFilter: { scope: tag } }),
};

const user: KindFixture = {
  kind: USER_KIND as unknown as Kind<Resource>,
  make: (v) => create(UserSchema, { id: randomUUID(), username: str(v["username"], `u-${short()}`), createdBy: str(v["created_by"], "fixture"), createdAt: ms(v["created_at"], NOW) }),
  scope: (tag) => ({ values: { created_by: tag }, where: { created_by: tag } }),
};

const serviceAccount: KindFixture = {
  kind: SERVICE_ACCOUNT_KIND as unknown as Kind<Resource>,
  make: (v) => create(ServiceAccountSchema, { id: randomUUID(), name: str(v["name"], `sa-${short()}`), createdBy: str(v["created_by"], "fixture"), createdAt: ms(v["created_at"], NOW) }),
  scope: (tag) => ({ values: { created_by: tag }, where: { created_by: tag } }),
};

const apiToken: KindFixture = {
  kind: API_TOKEN_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(ApiTokenSchema, {
      id: randomUUID(),
      name: str(v["name"], `t-${short()}`),
      ownerType: PrincipalType.USER,
      ownerId: str(v["owner_id"], randomUUID()),
      projectId: str(v["project_id"], randomUUID()),
      role: Role.READER,
      createdAt: ms(v["created_at"], NOW),
      expiresAt: timestampFromMs(NOW + 86_400_000),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const roleBinding: KindFixture = {
  kind: ROLE_BINDING_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(RoleBindingSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      principalType: PrincipalType.USER,
      principalId: str(v["principal_id"], randomUUID()),
      role: Role.MEMBER,
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const signingKey: KindFixture = {
  kind: SIGNING_KEY_KIND as unknown as Kind<Resource>,
  make: (v) => create(SigningKeySchema, { id: randomUUID(), algorithm: str(v["algorithm"], "ES256"), publicJwk: "{}", createdAt: ms(v["created_at"], NOW) }),
  scope: (tag) => ({ values: { algorithm: tag }, where: { algorithm: tag } }),
};

const credential: KindFixture = {
  kind: CREDENTIAL_KIND as unknown as Kind<Resource>,
  make: (v) => create(CredentialSchema, { id: randomUUID(), ownerType: str(v["owner_type"], "user"), secretHash: "not-a-real-hash", updatedAt: ms(v["updated_at"], NOW) }),
  scope: (tag) => ({ values: { owner_type: tag }, where: { owner_type: tag } }),
};

const quota: KindFixture = {
  kind: QUOTA_KIND as unknown as Kind<Resource>,
  // The service keeps one quota per project (id = project id); the store does not care, and
  // the contract puts several objects in one project_id to filter on it.
  make: (v) => create(QuotaSchema, { id: randomUUID(), projectId: str(v["project_id"], randomUUID()), limits: { vms: 10n }, used: { vms: 1n }, createdAt: ms(v["created_at"], NOW) }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const auditRecord: KindFixture = {
  kind: AUDIT_RECORD_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(AuditRecordSchema, {
      id: randomUUID(),
      principal: { kind: str(v["principal_kind"], "user"), id: str(v["principal_id"], randomUUID()), name: "someone" },
      procedure: str(v["procedure"], "/Quantixkvm.compute.v1.VMService/CreateVM"),
      projectId: str(v["project_id"], randomUUID()),
      code: str(v["code"], "ok"),
      time: ms(v["time"], NOW),
      targetIds: [randomUUID()],
    }),
  scope: (tag) => ({ values: { procedure: tag }, where: { procedure: tag } }),
};

const joinToken: KindFixture = {
  kind: JOIN_TOKEN_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(JoinTokenSchema, {
      id: randomUUID(),
      nodeName: str(v["node_name"], `h-${randomUUID().slice(0, 8)}`),
      nodeId: randomUUID(),
      createTime: ms(v["create_time"], NOW),
      secretSha256: new Uint8Array(32).fill(7),
    }),
  scope: (tag) => ({ values: { node_name: tag }, where: { node_name: tag } }),
};

const storagePool: KindFixture = {
  kind: STORAGE_POOL_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(StoragePoolSchema, {
      id: randomUUID(),
      name: str(v["name"], `pool-${short()}`),
      labels,
      spec: { type: int(v["type"], 1) },
      status: { state: int(v["state"], 2) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: {}, labels: { scope: tag }, labelFilter: { scope: tag } }),
};

const volume: KindFixture = {
  kind: VOLUME_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(VolumeSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `vol-${short()}`),
      labels,
      spec: {
        sizeGib: BigInt(int(v["size_gib"], 1)),
        poolId: str(v["pool_id"], randomUUID()),
        bootable: typeof v["bootable"] === "boolean" ? v["bootable"] : false,
        ...(str(v["source_volume_id"], "") !== "" ? { source: { source: { case: "volumeId" as const, value: str(v["source_volume_id"], "") } } } : {}),
      },
      status: { state: int(v["state"], 11), ...(str(v["vm_id"], "") !== "" ? { attachments: [{ vmId: str(v["vm_id"], "") }] } : {}) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
  // A volume a node has started to create has a file to remove.
  busy: { state: 2 },
};

const image: KindFixture = {
  kind: IMAGE_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(ImageSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `img-${short()}`),
      labels,
      spec: { poolId: str(v["pool_id"], randomUUID()), source: { source: { case: "url", value: "https://example.com/debian.qcow2" } } },
      status: { state: int(v["state"], 1) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const snapshot: KindFixture = {
  kind: SNAPSHOT_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) => {
    const vmId = str(v["vm_id"], "");
    return create(SnapshotSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `snap-${short()}`),
      labels,
      spec: { target: vmId !== "" ? { case: "vmId", value: vmId } : { case: "volumeId", value: str(v["volume_id"], randomUUID()) } },
      status: { state: int(v["state"], 1) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    });
  },
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
  // An AVAILABLE snapshot exists on its node.
  busy: { state: 2 },
};

const virtualNetwork: KindFixture = {
  kind: VIRTUAL_NETWORK_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(VirtualNetworkSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `net-${short()}`),
      labels,
      spec: { type: int(v["type"], 3), cidr: "10.0.0.0/24" },
      status: { state: int(v["state"], 1) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const mac = () => `52:54:00:${randomUUID().slice(0, 6).match(/../g)!.join(":")}`;

const port: KindFixture = {
  kind: PORT_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(PortSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `port-${short()}`),
      labels,
      spec: { networkId: str(v["network_id"], randomUUID()), macAddress: str(v["mac_address"], mac()), fixedIps: [str(v["ip_address"], "10.0.0.2")] },
      status: { state: int(v["state"], 1), deviceId: str(v["device_id"], ""), deviceOwner: int(v["device_owner"], 0), nodeId: str(v["node_id"], "") },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const securityGroup: KindFixture = {
  kind: SECURITY_GROUP_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(SecurityGroupSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `sg-${short()}`),
      labels,
      rules: [{ id: randomUUID(), direction: 2, ethertype: 1 }],
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const networkAllocation: KindFixture = {
  kind: NETWORK_ALLOCATION_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(NetworkAllocationSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      networkId: str(v["network_id"], randomUUID()),
      address: "10.0.0.2",
      vni: int(v["vni"], 0),
      portId: str(v["port_id"], randomUUID()),
      requested: typeof v["requested"] === "boolean" ? v["requested"] : false,
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const floatingIp: KindFixture = {
  kind: FLOATING_IP_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(FloatingIpSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      externalNetworkId: str(v["external_network_id"], randomUUID()),
      address: str(v["address"], "203.0.113.10"),
      portId: str(v["port_id"], ""),
      vmId: str(v["vm_id"], ""),
      labels,
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const vpnService: KindFixture = {
  kind: VPN_SERVICE_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(VpnServiceSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `vpn-${short()}`),
      labels,
      spec: { type: int(v["type"], 1), networkId: str(v["network_id"], randomUUID()) },
      status: { state: int(v["state"], 1) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const loadBalancer: KindFixture = {
  kind: LOAD_BALANCER_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(LoadBalancerSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `lb-${short()}`),
      labels,
      spec: { vipNetworkId: str(v["vip_network_id"], randomUUID()), vipAddress: "10.0.0.5" },
      status: { state: int(v["state"], 1), vipPortId: str(v["vip_port_id"], randomUUID()) },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

export const KIND_FIXTURES: readonly KindFixture[] = [vm, node, event, migration, nodeTombstone, project, user, serviceAccount, apiToken, roleBinding, signingKey, credential, quota, auditRecord, joinToken, storagePool, volume, image, snapshot, virtualNetwork, port, securityGroup, networkAllocation, floatingIp, vpnService, loadBalancer];
