/**
 * The role matrix (issue 12's Done-when): every unary and server-streaming RPC the control
 * plane serves or lists × every caller (system admin, project admin, member, reader, a
 * member of the other project, no token, an expired token) × the caller's project and
 * the other one, over Connect JSON, gRPC-Web and gRPC from @grpc/grpc-js (the fast path).
 * The expected outcome is derived from the policy table; key cases are asserted by hand
 * in authorization.test.ts. Client- and bidi-streaming RPCs (UploadImage,
 * CollaborativeSession: both not built yet) are left out: their clients need a
 * request stream, and their policy is checked by policy.test.ts.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { CreateVirtualNetworkRequestSchema, VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { LoadBalancerService } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { BackendProtocol, ListenerProtocol } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { VpnServiceManager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { VpnType } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { VirtualNetworkService as Networks } from "../services/network-service.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { SnapshotSchema, SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { create } from "@bufbuild/protobuf";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { PrincipalType, Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { randomIds, SNAPSHOT_CONTROLLER, SNAPSHOT_KIND, systemClock, type ProjectRole } from "@quantix/core";
import { PENDING_SERVICES, SERVED_ELSEWHERE, SERVED_FILES } from "../rpc/catalog.js";
import { CALLERS, PROTOCOLS, startWorld, USER_PASSWORD, type CallerName, type World } from "../testing/identity-world.js";
import { POLICY, type Policy } from "./policy.js";
import { roleIncludes } from "./roles.js";

type Expect = "allowed" | "denied" | "hidden" | "unauthenticated";

const services: DescService[] = [...new Map([...SERVED_FILES.flatMap((f) => f.services), ...PENDING_SERVICES.map((p) => p.service), ...SERVED_ELSEWHERE.map((p) => p.service)].map((s) => [s.typeName, s])).values()];
const methods = services.flatMap((s) => s.methods).filter((m) => m.methodKind === "unary" || m.methodKind === "server_streaming");

/** Each caller's roles, by the world's projects A (its own) and B. */
function rolesOf(caller: CallerName, w: World): Map<string, ProjectRole> {
  const r = new Map<string, ProjectRole>();
  if (caller === "project-admin") r.set(w.projectA, "admin");
  if (caller === "member") r.set(w.projectA, "member");
  if (caller === "reader") r.set(w.projectA, "reader");
  if (caller === "member-of-other") r.set(w.projectB, "member");
  return r;
}

/** What the policy table says a caller gets for a call acting in `project` (the request names it, or its object is there). */
function expected(policy: Policy, caller: CallerName, project: string, w: World, req: Record<string, unknown>): Expect {
  if (policy.access === "public") return "allowed";
  if (caller === "no-token" || caller === "expired-token") return "unauthenticated";
  if (caller === "system-admin") return "allowed";
  const roles = rolesOf(caller, w);
  switch (policy.access) {
    case "authenticated":
    case "cluster-read":
      return "allowed";
    case "system-admin":
    case "agent":
      return "denied";
    case "project": {
      const have = roles.get(project);
      // ImportImage's oneof: the matrix sends image_id (an image of the project).
      const t = policy.target.from === "either" ? policy.target.targets[0]! : policy.target;
      if (t.from === "any-project") return [...roles.values()].some((r) => roleIncludes(r, policy.role)) ? "allowed" : "denied";
      if (t.from === "list" && !req["projectId"]) return "allowed";
      if (roleIncludes(have, policy.role)) return "allowed";
      if (!have && (t.from === "object" || t.from === "target" || (t.from === "request" && t.hide))) return "hidden";
      return "denied";
    }
  }
}

/** A request for `m` acting in `project` (`vm` is a VM there); objects a call would destroy are made for it. */
async function requestFor(w: World, m: DescMethod, project: string, vm: string): Promise<Record<string, unknown>> {
  const s = m.parent.typeName;
  const name = `m-${randomUUID().slice(0, 8)}`;
  if (s === VMService.typeName) {
    switch (m.name) {
      case "CreateVM":
        return { name, projectId: project, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } };
      case "ListVMs":
      case "WatchVMs":
        return { projectId: project };
      case "UpdateVM":
        return { id: vm, description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteVM": {
        const fresh = await w.admin(VMService).createVM({ name, projectId: project, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
        return { id: fresh.id };
      }
      default:
        return m.input.fields.some((f) => f.name === "vm_id") ? { vmId: vm } : { id: vm };
    }
  }
  if (s === ProjectService.typeName) {
    switch (m.name) {
      case "CreateProject":
        return { name };
      case "GetProject":
        return { id: project };
      case "UpdateProject":
        return { id: project, description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteProject":
        return { id: (await w.admin(ProjectService).createProject({ name })).id };
      case "SetRoleBinding":
        return { projectId: project, principalType: PrincipalType.SERVICE_ACCOUNT, principalId: await serviceAccount(w), role: Role.READER };
      case "DeleteRoleBinding": {
        const sa = await serviceAccount(w);
        await w.admin(ProjectService).setRoleBinding({ projectId: project, principalType: PrincipalType.SERVICE_ACCOUNT, principalId: sa, role: Role.READER });
        return { projectId: project, principalType: PrincipalType.SERVICE_ACCOUNT, principalId: sa };
      }
      default:
        return { projectId: project };
    }
  }
  if (s === IdentityService.typeName) {
    switch (m.name) {
      case "CreateUser":
        return { username: name, password: USER_PASSWORD };
      case "GetUser":
        return { id: w.userIds["member"] };
      case "DeleteUser":
        return { id: (await w.admin(IdentityService).createUser({ username: name, password: USER_PASSWORD })).id };
      case "SetPassword":
        return { newPassword: "short" };
      case "CreateServiceAccount":
        return { name };
      case "DeleteServiceAccount":
        return { id: await serviceAccount(w) };
      case "CreateToken":
        return { name, projectId: project, role: Role.READER, ttlSec: 600n };
      case "RevokeToken":
        return { id: randomUUID() };
      default:
        return {};
    }
  }
  if (s === "Quantixkvm.compute.v1.NodeService") return m.name === "RegisterNode" || m.name.startsWith("List") || m.name.startsWith("Watch") ? {} : { id: randomUUID() };
  if (s === "Quantixkvm.compute.v1.MigrationService") return m.name.startsWith("List") ? { projectId: project } : m.name.startsWith("Watch") ? { vmId: vm } : { id: randomUUID() };
  if (s === "Quantixkvm.event.v1.EventService") return { projectId: project };
  if (s === "Quantixkvm.quota.v1.QuotaService") return m.name === "SetQuota" ? { projectId: project, limits: { vms: 100n } } : { projectId: project };
  if (s === "Quantixkvm.audit.v1.AuditService") return { projectId: project };
  if (s === StoragePoolService.typeName) {
    switch (m.name) {
      case "CreateStoragePool":
        return { name, spec: { type: StoragePoolType.LOCAL_DIR } };
      case "DeleteStoragePool":
        return { id: (await w.admin(StoragePoolService).createStoragePool({ name, spec: { type: StoragePoolType.LOCAL_DIR } })).id };
      case "UpdateStoragePool":
        return { id: await poolOf(w), description: "matrix", updateMask: { paths: ["description"] } };
      default:
        return m.name.startsWith("List") || m.name.startsWith("Watch") ? {} : { id: await poolOf(w) };
    }
  }
  if (s === VolumeService.typeName) {
    switch (m.name) {
      case "CreateVolume":
        return { name, projectId: project, spec: { sizeGib: 1n, poolId: await poolOf(w) } };
      case "ListVolumes":
      case "WatchVolumes":
        return { projectId: project };
      case "UpdateVolume":
        return { id: await volumeIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteVolume":
        return { id: (await w.admin(VolumeService).createVolume({ name, projectId: project, spec: { sizeGib: 1n, poolId: await poolOf(w) } })).id };
      case "ResizeVolume":
        return { id: await volumeIn(w, project), newSizeGib: 1n };
      case "CloneVolume":
        return { id: await volumeIn(w, project), name };
      case "AttachVolume":
      case "DetachVolume":
        return { id: await volumeIn(w, project), vmId: project === w.projectA ? w.vmA : w.vmB };
      default:
        return { id: await volumeIn(w, project) };
    }
  }
  if (s === SnapshotService.typeName) {
    switch (m.name) {
      case "CreateSnapshot":
        return { name, spec: { target: { case: "volumeId", value: await volumeIn(w, project) } } };
      case "ListSnapshots":
      case "WatchSnapshots":
        return { projectId: project };
      case "UpdateSnapshot":
        return { id: await snapshotIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteSnapshot":
        return { id: await newSnapshot(w, project, name) };
      default:
        return { id: await snapshotIn(w, project) };
    }
  }
  if (s === ImageService.typeName) {
    const url = "http://127.0.0.1:9/matrix.qcow2";
    switch (m.name) {
      case "CreateImage":
        return { name, projectId: project, spec: { source: { source: { case: "url", value: url } }, poolId: await poolOf(w) } };
      case "ListImages":
      case "WatchImages":
        return { projectId: project };
      case "UpdateImage":
        return { id: await imageIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteImage":
        return { id: (await w.admin(ImageService).createImage({ name, projectId: project, spec: { source: { source: { case: "url", value: url } }, poolId: await poolOf(w) } })).id };
      case "ImportImage":
        return { target: { case: "imageId", value: await imageIn(w, project) } };
      default:
        return { id: await imageIn(w, project) };
    }
  }
  if (s === VirtualNetworkService.typeName) {
    switch (m.name) {
      case "CreateVirtualNetwork":
        return { name, projectId: project, spec: NET_SPEC };
      case "ListVirtualNetworks":
      case "WatchVirtualNetworks":
        return { projectId: project };
      case "UpdateVirtualNetwork":
        return { id: await networkIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteVirtualNetwork":
        return { id: (await w.admin(VirtualNetworkService).createVirtualNetwork({ name, projectId: project, spec: NET_SPEC })).id };
      default:
        return { id: await networkIn(w, project) };
    }
  }
  if (s === PortService.typeName) {
    switch (m.name) {
      case "CreatePort":
        return { projectId: project, spec: { networkId: await networkIn(w, project) } };
      case "ListPorts":
      case "WatchPorts":
        return { projectId: project };
      case "UpdatePort":
        return { id: await portIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeletePort":
        return { id: (await w.admin(PortService).createPort({ projectId: project, spec: { networkId: await networkIn(w, project) } })).id };
      default:
        return { id: await portIn(w, project) };
    }
  }
  if (s === SecurityGroupService.typeName) {
    switch (m.name) {
      case "CreateSecurityGroup":
        return { name, projectId: project };
      case "ListSecurityGroups":
      case "WatchSecurityGroups":
        return { projectId: project };
      case "UpdateSecurityGroup":
        return { id: await groupIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteSecurityGroup":
        return { id: (await w.admin(SecurityGroupService).createSecurityGroup({ name, projectId: project })).id };
      case "AddSecurityGroupRules":
        return { securityGroupId: await groupIn(w, project), rules: [{ direction: 1, protocol: 1, portRangeMin: 22 }] };
      case "RemoveSecurityGroupRules":
        return { securityGroupId: await groupIn(w, project), ruleIds: [randomUUID()] };
      default:
        return { id: await groupIn(w, project) };
    }
  }
  if (s === FloatingIpService.typeName) {
    switch (m.name) {
      case "CreateFloatingIp":
        return { projectId: project, externalNetworkId: await externalNetworkOf(w) };
      case "ListFloatingIps":
      case "WatchFloatingIps":
        return { projectId: project };
      case "UpdateFloatingIp":
        return { id: await fipIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteFloatingIp":
        return { id: (await w.admin(FloatingIpService).createFloatingIp({ projectId: project, externalNetworkId: await externalNetworkOf(w) })).id };
      case "AssociateFloatingIp":
        return { id: await fipIn(w, project), portId: await portIn(w, project) };
      default:
        return { id: await fipIn(w, project) };
    }
  }
  if (s === VpnServiceManager.typeName) {
    // IPsec services without peers: any number fit one router (no WireGuard port to share).
    const vpnSpec = async () => ({ type: VpnType.IPSEC, networkId: await routedNetworkIn(w, project) });
    switch (m.name) {
      case "CreateVpnService":
        return { name, projectId: project, spec: await vpnSpec() };
      case "ListVpnServices":
      case "WatchVpnServices":
        return { projectId: project };
      case "UpdateVpnService":
        return { id: await vpnIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteVpnService":
        return { id: (await w.admin(VpnServiceManager).createVpnService({ name, projectId: project, spec: await vpnSpec() })).id };
      case "AddVpnPeer":
        return { id: await vpnIn(w, project), peer: { name: `p${randomUUID().slice(0, 8)}`, endpoint: "198.51.100.5", remoteSubnets: [`10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}.0/24`], presharedKey: "matrix-pre-shared-key-0001" } };
      case "RemoveVpnPeer":
        return { id: await vpnIn(w, project), peerName: "nobody" };
      default:
        return { id: await vpnIn(w, project) };
    }
  }
  if (s === LoadBalancerService.typeName) {
    switch (m.name) {
      case "CreateLoadBalancer":
        return { name, projectId: project, spec: await lbSpecIn(w, project) };
      case "ListLoadBalancers":
      case "WatchLoadBalancers":
        return { projectId: project };
      case "UpdateLoadBalancer":
        return { id: await lbIn(w, project), description: "matrix", updateMask: { paths: ["description"] } };
      case "DeleteLoadBalancer":
        return { id: (await w.admin(LoadBalancerService).createLoadBalancer({ name, projectId: project, spec: await lbSpecIn(w, project) })).id };
      case "AddPoolMembers":
        return { id: await lbIn(w, project), poolName: "web", members: [{ name: "matrix", address: "10.30.0.9", port: 8080 }] };
      case "RemovePoolMembers":
        return { id: await lbIn(w, project), poolName: "web", memberNames: ["absent"] };
      default:
        return { id: await lbIn(w, project) };
    }
  }
  return {};
}

const lbsByProject = new Map<string, Promise<string>>();

/** A load balancer's spec on `project`'s routed network: one TCP listener to an empty TCP pool "web". */
async function lbSpecIn(w: World, project: string) {
  return { vipNetworkId: await routedNetworkIn(w, project), listeners: [{ name: "http", protocol: ListenerProtocol.TCP, port: 80, defaultPool: "web" }], pools: [{ name: "web", protocol: BackendProtocol.TCP }] };
}

/** A load balancer in `project` (made once per project). */
function lbIn(w: World, project: string): Promise<string> {
  let v = lbsByProject.get(project);
  if (!v) {
    v = lbSpecIn(w, project).then(async (spec) => (await w.admin(LoadBalancerService).createLoadBalancer({ name: "matrix-lb", projectId: project, spec })).id);
    lbsByProject.set(project, v);
  }
  return v;
}

const routedByProject = new Map<string, Promise<string>>();
const vpnsByProject = new Map<string, Promise<string>>();

/** A network of `project` with a central router to the world's EXTERNAL network (made once per project). */
function routedNetworkIn(w: World, project: string): Promise<string> {
  let v = routedByProject.get(project);
  if (!v) {
    v = externalNetworkOf(w).then(async (externalNetworkId) => (await w.admin(VirtualNetworkService).createVirtualNetwork({ name: "matrix-routed", projectId: project, spec: { ...NET_SPEC, cidr: "10.30.0.0/20", router: { externalNetworkId } } })).id);
    routedByProject.set(project, v);
  }
  return v;
}

/** A VPN service of `project` (made once per project). */
function vpnIn(w: World, project: string): Promise<string> {
  let v = vpnsByProject.get(project);
  if (!v) {
    v = routedNetworkIn(w, project).then(async (networkId) => (await w.admin(VpnServiceManager).createVpnService({ name: "matrix-vpn", projectId: project, spec: { type: VpnType.IPSEC, networkId } })).id);
    vpnsByProject.set(project, v);
  }
  return v;
}

const externalNetworks = new Map<World, Promise<string>>();
const fipsByProject = new Map<string, Promise<string>>();

/**
 * The world's EXTERNAL network (made once): the matrix's world has no node with a
 * physical network, so it is made by the service the API runs with the nodes' support
 * answered. A /20: room for every floating IP the matrix allocates.
 */
function externalNetworkOf(w: World): Promise<string> {
  let v = externalNetworks.get(w);
  if (!v) {
    const nets = new Networks({ store: w.cp.store, clock: systemClock, ids: randomIds, featureSupport: async () => ({ supported: ["matrix-node"], reasons: [] }) });
    v = nets.create(create(CreateVirtualNetworkRequestSchema, { name: "matrix-external", spec: { type: NetworkType.EXTERNAL, cidr: "198.18.0.0/20", physicalNetwork: "ext" } })).then((n) => n.id);
    externalNetworks.set(w, v);
  }
  return v;
}

/** A floating IP of `project` (made once per project). */
function fipIn(w: World, project: string): Promise<string> {
  let v = fipsByProject.get(project);
  if (!v) {
    v = externalNetworkOf(w).then(async (externalNetworkId) => (await w.admin(FloatingIpService).createFloatingIp({ projectId: project, externalNetworkId })).id);
    fipsByProject.set(project, v);
  }
  return v;
}

/** A /20: room for every port the matrix creates in a project. */
const NET_SPEC = { type: NetworkType.VXLAN, cidr: "10.20.0.0/20" };
const networksByProject = new Map<string, Promise<string>>();
const portsByProject = new Map<string, Promise<string>>();
const groupsByProject = new Map<string, Promise<string>>();

/** A virtual network in `project` (made once per project). */
function networkIn(w: World, project: string): Promise<string> {
  let v = networksByProject.get(project);
  if (!v) {
    v = w.admin(VirtualNetworkService).createVirtualNetwork({ name: "matrix-net", projectId: project, spec: NET_SPEC }).then((n) => n.id);
    networksByProject.set(project, v);
  }
  return v;
}

/** A port in `project` (made once per project). */
function portIn(w: World, project: string): Promise<string> {
  let v = portsByProject.get(project);
  if (!v) {
    v = networkIn(w, project).then(async (networkId) => (await w.admin(PortService).createPort({ name: "matrix-port", projectId: project, spec: { networkId } })).id);
    portsByProject.set(project, v);
  }
  return v;
}

/** A security group in `project` (made once per project). */
function groupIn(w: World, project: string): Promise<string> {
  let v = groupsByProject.get(project);
  if (!v) {
    v = w.admin(SecurityGroupService).createSecurityGroup({ name: "matrix-group", projectId: project }).then((g) => g.id);
    groupsByProject.set(project, v);
  }
  return v;
}

const pools = new Map<World, Promise<string>>();
const snapshotsByProject = new Map<string, Promise<string>>();

/**
 * A snapshot of the project's volume, recorded as the service records it (the matrix's
 * world has no node to take it on, so no volume there ever becomes AVAILABLE): written
 * to the store directly, AVAILABLE, by the snapshot controller's name.
 */
async function newSnapshot(w: World, project: string, name: string): Promise<string> {
  const volumeId = await volumeIn(w, project);
  const s = create(SnapshotSchema, { id: randomUUID(), name, projectId: project, generation: 1n, spec: { target: { case: "volumeId", value: volumeId } }, status: { state: SnapshotState.AVAILABLE, observedGeneration: 1n } });
  return (await w.cp.store.of(SNAPSHOT_KIND).create(s as never, { actor: SNAPSHOT_CONTROLLER })).id;
}

/** A snapshot in `project` (made once per project). */
function snapshotIn(w: World, project: string): Promise<string> {
  let v = snapshotsByProject.get(project);
  if (!v) {
    v = newSnapshot(w, project, "matrix-snapshot");
    snapshotsByProject.set(project, v);
  }
  return v;
}

const imagesByProject = new Map<string, Promise<string>>();

/** An image in `project` (made once per project; its import fails, which reads need not care about). */
function imageIn(w: World, project: string): Promise<string> {
  let v = imagesByProject.get(project);
  if (!v) {
    v = poolOf(w).then(async (poolId) => (await w.admin(ImageService).createImage({ name: "matrix-image", projectId: project, spec: { source: { source: { case: "url", value: "http://127.0.0.1:9/matrix.qcow2" } }, poolId } })).id);
    imagesByProject.set(project, v);
  }
  return v;
}
const volumesByProject = new Map<string, Promise<string>>();

/** A storage pool of the world (made once). */
function poolOf(w: World): Promise<string> {
  let p = pools.get(w);
  if (!p) {
    p = w.admin(StoragePoolService).createStoragePool({ name: "matrix-pool", spec: { type: StoragePoolType.LOCAL_DIR } }).then((x) => x.id);
    pools.set(w, p);
  }
  return p;
}

/** A volume in `project` (made once per project). */
function volumeIn(w: World, project: string): Promise<string> {
  let v = volumesByProject.get(project);
  if (!v) {
    v = poolOf(w).then(async (poolId) => (await w.admin(VolumeService).createVolume({ name: "matrix-volume", projectId: project, spec: { sizeGib: 1n, poolId } })).id);
    volumesByProject.set(project, v);
  }
  return v;
}

async function serviceAccount(w: World): Promise<string> {
  return (await w.admin(IdentityService).createServiceAccount({ name: `sa-${randomUUID().slice(0, 8)}` })).id;
}

function check(e: Expect, code: Code | 0, policy: Policy, what: string, message: string): void {
  const detail = `${what}: expected ${e}, got ${code === 0 ? "OK" : Code[code]} ${message}`;
  switch (e) {
    case "unauthenticated":
      return assert.equal(code, Code.Unauthenticated, detail);
    case "denied":
      return assert.equal(code, Code.PermissionDenied, detail);
    case "hidden":
      return assert.equal(code, Code.NotFound, detail);
    case "allowed":
      // The handler may refuse for its own reasons (bad input, a missing object); never for
      // want of credentials, nor, unless it narrows an "authenticated" policy itself, of roles.
      assert.notEqual(code, Code.Unauthenticated, detail);
      if (policy.access !== "authenticated") assert.notEqual(code, Code.PermissionDenied, detail);
  }
}

describe("the role matrix: every RPC × caller × own/other project × protocol", () => {
  let w: World;
  before(async () => {
    w = await startWorld();
  });
  after(() => w.close());

  for (const protocol of PROTOCOLS) {
    test(`over ${protocol}`, async () => {
      let calls = 0;
      const tally: Record<Expect, number> = { allowed: 0, denied: 0, hidden: 0, unauthenticated: 0 };
      for (const m of methods) {
        const procedure = `${m.parent.typeName}/${m.name}`;
        const policy = POLICY[procedure]!;
        const cases: Promise<void>[] = [];
        for (const caller of CALLERS) {
          for (const [where, project, vm] of [["own", w.projectA, w.vmA], ["other", w.projectB, w.vmB]] as const) {
            cases.push(
              (async () => {
                const req = await requestFor(w, m, project, vm);
                const e = expected(policy, caller, project, w, req);
                const out = await w.call(protocol, m, req, w.tokens[caller]);
                calls++;
                tally[e]++;
                check(e, out.code, policy, `${procedure} as ${caller} in the ${where} project over ${protocol}`, out.message);
              })(),
            );
          }
        }
        await Promise.all(cases);
      }
      // Every outcome occurs, many times: the matrix is no formality.
      assert.ok(calls > 2000, `${calls} calls`);
      for (const [k, n] of Object.entries(tally)) assert.ok(n > 50, `only ${n} ${k} cases`);
    });
  }
});
