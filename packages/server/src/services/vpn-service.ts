import { AsyncLocalStorage } from "node:async_hooks";
import { clone, create } from "@bufbuild/protobuf";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VpnServiceSchema, VpnServiceSpecSchema, VpnServiceState, VpnServiceStatusSchema, VpnType, type VpnService, type VpnServiceSpec } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { UpdateVpnServiceRequestSchema, type AddVpnPeerRequest, type CreateVpnServiceRequest, type DeleteVpnServiceRequest, type RemoveVpnPeerRequest, type UpdateVpnServiceRequest } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import {
  addressPlanOf,
  allOf,
  checkVpnSpec,
  commonViolations,
  DEFAULT_PROJECT_ID,
  fillVpnDefaults,
  ID_DESCRIPTION,
  ID_PATTERN,
  invalidArgument,
  ipv4Overlap,
  NAME_PATTERN,
  notFound,
  parseIpv4Cidr,
  PROJECT_KIND,
  QuantixError,
  throwIfViolations,
  VIRTUAL_NETWORK_KIND,
  Violations,
  VPN_LIMITS,
  VPN_SERVICE_KIND,
  newWireguardKey,
  wireguardPublicKey,
  withoutVpnSecrets,
  type Clock,
  type IdGenerator,
  type Ipv4Subnet,
  type Resource,
  type Store,
} from "@quantix/core";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ResourceWriter } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { setCondition } from "../controllers/conditions.js";
import type { Budget } from "../resources/resource-writer.js";

type V = VpnService & Resource;
type N = VirtualNetwork & Resource;

/** The subnets of a network, as CIDRs. */
const subnetsOf = (n: VirtualNetwork): string[] => addressPlanOf(n).subnets.map((s) => s.subnet.cidr);

/**
 * VpnServiceManager's writes (issue 15): a WireGuard or IPsec endpoint on a network's
 * central router (the network needs spec.router.external_network_id), in the network's
 * project. Secrets are write-only: the WireGuard private key is generated when not given
 * (its public key in status.wireguard_public_key), stored with the service for the
 * router, and every read (Get, List, Watch, and these methods' answers) returns them
 * empty; an update that leaves one empty keeps the stored one. Remote subnets may not
 * overlap the network's subnets, each other, or those of the network's other VPN
 * services; two WireGuard services of one network need different listen ports. The
 * network controller applies them on the router's node and writes the status.
 */
export class VpnServiceService {
  private readonly writer: ResourceWriter<V>;
  /** The network of the service an update changes, read before it (its check needs the subnets), per call. */
  private readonly network = new AsyncLocalStorage<N>();

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator }) {
    this.writer = new ResourceWriter(VPN_SERVICE_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", "spec.local_subnets", "spec.wireguard", "spec.ipsec", "spec.peers", "spec.disabled"],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateVpnServiceRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          const spec = (draft["spec"] ??= create(VpnServiceSpecSchema)) as VpnServiceSpec;
          const given = clone(VpnServiceSpecSchema, r.spec);
          Object.assign(spec, { localSubnets: given.localSubnets, protocolConfig: given.protocolConfig, peers: given.peers, disabled: given.disabled });
        }
      },
      check: (next, cur) => {
        const net = this.network.getStore();
        if (!cur || !net) return;
        const v = new Violations();
        if (next.spec?.type !== cur.spec?.type) v.add("spec.type", "IMMUTABLE", "is fixed after creation");
        if (next.spec?.networkId !== cur.spec?.networkId) v.add("spec.network_id", "IMMUTABLE", "is fixed after creation");
        throwIfViolations(v.list);
        keepSecrets(next.spec!, cur.spec!);
        this.complete(next, net);
      },
    });
  }

  /** CreateVpnService. */
  async create(req: CreateVpnServiceRequest): Promise<VpnService> {
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    const v = new Violations();
    checkName(v, req.name);
    const spec = req.spec ? clone(VpnServiceSpecSchema, req.spec) : undefined;
    if (spec?.networkId) v.pattern("spec.network_id", spec.networkId, ID_PATTERN, ID_DESCRIPTION);
    throwIfViolations([...v.list, ...commonViolations(req)]);
    if (!spec) throw invalidArgument([{ field: "spec", reason: "REQUIRED", description: "is required: type and network_id" }]);
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    const net = spec.networkId === "" ? undefined : await this.routedNetwork(spec.networkId, projectId);
    const draft = create(VpnServiceSchema, { name: req.name, projectId, labels: req.labels, description: req.description, spec, status: create(VpnServiceStatusSchema) }) as V;
    if (spec.type === VpnType.WIREGUARD && (spec.protocolConfig.case !== "wireguard" || spec.protocolConfig.value.privateKey === "")) {
      fillVpnDefaults(spec, net ? subnetsOf(net) : []);
      if (spec.protocolConfig.case === "wireguard") spec.protocolConfig.value.privateKey = newWireguardKey();
    }
    if (!net) {
      const e = new Violations();
      checkVpnSpec(e, spec, []);
      throwIfViolations(e.list);
      throw invalidArgument([{ field: "spec.network_id", reason: "REQUIRED", description: "is required" }]);
    }
    this.complete(draft, net);
    await this.checkNeighbours(draft, net, "");
    const nowMs = this.deps.clock.now();
    draft.status!.state = VpnServiceState.PENDING;
    draft.status!.conditions = setCondition([], { type: "Ready", status: false, reason: "Pending", message: "waiting for the network's router to apply it", generation: 1n }, nowMs);
    const made = await this.writer.create({ name: draft.name, projectId, labels: draft.labels, description: draft.description, spec: draft.spec, status: draft.status });
    return withoutVpnSecrets(made);
  }

  /** UpdateVpnService: the mutable fields per update_mask; empty secrets keep the stored ones. */
  async update(req: UpdateVpnServiceRequest): Promise<VpnService> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(VPN_SERVICE_KIND).get(req.id);
    if (!cur) throw notFound("VPN service", req.id);
    const net = await this.routedNetwork(cur.spec?.networkId ?? "", cur.projectId);
    if (req.name !== "") {
      const v = new Violations();
      checkName(v, req.name);
      throwIfViolations(v.list);
    }
    // The other services of the network: checked before the write (as network overlaps are).
    if (req.spec) {
      const probe = clone(VpnServiceSchema, cur) as V;
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0 || paths.includes("spec.peers")) probe.spec!.peers = clone(VpnServiceSpecSchema, req.spec).peers;
      if (paths.length === 0 || paths.some((p) => p.startsWith("spec.wireguard"))) probe.spec!.protocolConfig = clone(VpnServiceSpecSchema, req.spec).protocolConfig;
      keepSecrets(probe.spec!, cur.spec!);
      if (probe.spec!.protocolConfig.case === "wireguard" && probe.spec!.protocolConfig.value.listenPort === 0) fillVpnDefaults(probe.spec!, subnetsOf(net));
      await this.checkNeighbours(probe, net, cur.id);
    }
    return withoutVpnSecrets(await this.network.run(net, () => this.writer.update(req.id, UpdateVpnServiceRequestSchema, req)));
  }

  /** AddVpnPeer: adds the peer, or replaces the one with its name, in one write. */
  async addPeer(req: AddVpnPeerRequest): Promise<VpnService> {
    requireWellFormedId("id", req.id);
    if (!req.peer) throw invalidArgument([{ field: "peer", reason: "REQUIRED", description: "is required" }]);
    const peer = req.peer;
    return this.changePeers(req.id, (peers) => {
      const i = peers.findIndex((p) => p.name === peer.name);
      const next = clone(VpnServiceSpecSchema, create(VpnServiceSpecSchema, { peers: [peer] })).peers[0]!;
      if (i >= 0 && next.presharedKey === "") next.presharedKey = peers[i]!.presharedKey;
      return i >= 0 ? peers.map((p, j) => (j === i ? next : p)) : [...peers, next];
    });
  }

  /** RemoveVpnPeer: by name; an unknown name changes nothing. */
  async removePeer(req: RemoveVpnPeerRequest): Promise<VpnService> {
    requireWellFormedId("id", req.id);
    if (req.peerName === "") throw invalidArgument([{ field: "peer_name", reason: "REQUIRED", description: "is required" }]);
    return this.changePeers(req.id, (peers) => peers.filter((p) => p.name !== req.peerName));
  }

  /** DeleteVpnService: the network controller tears its tunnels down. */
  async delete(req: DeleteVpnServiceRequest, budget: Budget): Promise<void> {
    await this.writer.delete(req.id, budget);
  }

  private async changePeers(id: string, change: (peers: VpnServiceSpec["peers"]) => VpnServiceSpec["peers"]): Promise<VpnService> {
    const cur = await this.deps.store.of(VPN_SERVICE_KIND).get(id);
    if (!cur) throw notFound("VPN service", id);
    const net = await this.routedNetwork(cur.spec?.networkId ?? "", cur.projectId);
    const probe = clone(VpnServiceSchema, cur) as V;
    probe.spec!.peers = change(probe.spec!.peers);
    this.complete(probe, net);
    await this.checkNeighbours(probe, net, cur.id);
    const updated = await this.deps.store.of(VPN_SERVICE_KIND).update(
      id,
      (x: V) => {
        const next = clone(VpnServiceSchema, x) as V;
        next.spec!.peers = change(next.spec!.peers);
        this.complete(next, net);
        if (JSON.stringify(next.spec!.peers.map((p) => [p.name, p.endpoint, p.publicKey, p.presharedKey, p.remoteSubnets, p.disabled, p.persistentKeepaliveSeconds, p.remoteId])) === JSON.stringify(x.spec!.peers.map((p) => [p.name, p.endpoint, p.publicKey, p.presharedKey, p.remoteSubnets, p.disabled, p.persistentKeepaliveSeconds, p.remoteId]))) return undefined;
        next.generation = x.generation + 1n;
        next.updatedAt = timestampFromMs(this.deps.clock.now());
        return next;
      },
      { actor: "api" },
    );
    return withoutVpnSecrets(updated);
  }

  /** Defaults filled in, the spec checked against the network, status' public key and port kept current. */
  private complete(o: V, net: N): void {
    const spec = o.spec!;
    fillVpnDefaults(spec, subnetsOf(net));
    const v = new Violations();
    checkVpnSpec(v, spec, subnetsOf(net));
    throwIfViolations(v.list);
    const status = (o.status ??= create(VpnServiceStatusSchema));
    if (spec.protocolConfig.case === "wireguard") {
      status.listenPort = spec.protocolConfig.value.listenPort;
      status.wireguardPublicKey = wireguardPublicKey(spec.protocolConfig.value.privateKey);
    } else {
      status.listenPort = 0;
      status.wireguardPublicKey = "";
    }
  }

  /**
   * The network `id`, in the project (or shared), VXLAN or ISOLATED, with a central router
   * (NOT_FOUND, INVALID_ARGUMENT or FAILED_PRECONDITION naming spec.network_id otherwise).
   */
  private async routedNetwork(id: string, projectId: string): Promise<N> {
    const net = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(id);
    if (!net || (net.projectId !== projectId && !net.spec?.shared)) throw new QuantixError("not_found", `spec.network_id: virtual network '${id}' not found`);
    if (net.spec?.type === NetworkType.EXTERNAL) throw invalidArgument([{ field: "spec.network_id", reason: "INVALID_VALUE", description: `virtual network '${id}' is EXTERNAL: a VPN connects the subnets of an overlay network` }]);
    if (!net.spec?.router?.externalNetworkId) {
      throw new QuantixError("failed_precondition", `spec.network_id: virtual network '${id}' has no router to an external network: a VPN endpoint runs on the network's central router; set its spec.router.external_network_id (UpdateVirtualNetwork)`);
    }
    return net;
  }

  /**
   * The network's other VPN services share its router: their remote subnets may not
   * overlap this one's, and two WireGuard services need different ports.
   */
  private async checkNeighbours(o: V, net: N, selfId: string): Promise<void> {
    const mine = o.spec!.peers.flatMap((p, i) => p.remoteSubnets.map((c, j) => ({ s: parseIpv4Cidr(c), field: `spec.peers[${i}].remote_subnets[${j}]` }))).filter((x): x is { s: Ipv4Subnet; field: string } => typeof x.s !== "string");
    const port = o.spec!.protocolConfig.case === "wireguard" ? o.spec!.protocolConfig.value.listenPort : 0;
    for await (const other of allOf(this.deps.store.of(VPN_SERVICE_KIND), { where: { network_id: net.id } })) {
      if (other.id === selfId) continue;
      if (port !== 0 && other.spec?.protocolConfig.case === "wireguard" && other.spec.protocolConfig.value.listenPort === port) {
        throw new QuantixError("already_exists", `spec.wireguard.listen_port: ${port} is used by VPN service '${other.id}' on the same router; choose another port`);
      }
      for (const p of other.spec?.peers ?? []) {
        for (const c of p.remoteSubnets) {
          const theirs = parseIpv4Cidr(c);
          const clash = typeof theirs === "string" ? undefined : mine.find((m) => ipv4Overlap(m.s, theirs));
          if (clash) throw invalidArgument([{ field: clash.field, reason: "OVERLAP", description: `${clash.s.cidr} overlaps ${c} of peer '${p.name}' of VPN service '${other.id}' on the same router` }]);
        }
      }
    }
  }
}

function checkName(v: Violations, name: string): void {
  if (v.length("name", name, 1, VPN_LIMITS.nameMax)) v.pattern("name", name, NAME_PATTERN, `must match ${NAME_PATTERN.source}`);
}

/** Secrets an update leaves empty keep their stored values (the private key; each peer's pre-shared key, by peer name). */
function keepSecrets(next: VpnServiceSpec, cur: VpnServiceSpec): void {
  if (next.protocolConfig.case === "wireguard" && next.protocolConfig.value.privateKey === "" && cur.protocolConfig.case === "wireguard") next.protocolConfig.value.privateKey = cur.protocolConfig.value.privateKey;
  for (const p of next.peers) if (p.presharedKey === "") p.presharedKey = cur.peers.find((c) => c.name === p.name)?.presharedKey ?? "";
}
