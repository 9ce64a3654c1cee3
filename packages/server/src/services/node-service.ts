import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { HypervisorInfoSchema, NodeSchema, NodeSpecSchema, NodeStatusSchema, DrainStatus_Phase, NodeStatus_Phase as Phase, ResourcesSchema, type Node, type NodeSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { UpdateHeartbeatResponseSchema, UpdateNodeRequestSchema, type DecommissionNodeRequest, type RegisterNodeRequest, type UpdateHeartbeatRequest, type UpdateHeartbeatResponse, type UpdateNodeRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { QuantixError, throwIfViolations, validateNodeSettings, validateRegisterNode, type Clock, type IdGenerator, type Store, NODE_KIND, NODE_TOMBSTONE_KIND } from "@quantix/core";
import { setCondition } from "../controllers/conditions.js";
import { decommissionNode, type DecommissionDeps } from "./node-decommission.js";

import { requireId } from "./vm-service.js";
import { ResourceWriter } from "../resources/resource-writer.js";
import { updateWithEvents } from "../events/record.js";
import { nodeEvents } from "../events/node-events.js";
import type { AgentIdentity } from "../enrollment/agent-identity.js";

/**
 * Who calls RegisterNode or UpdateHeartbeat where agents must prove it (TLS configured):
 * the enrolled agent its verified certificate names, or undefined (no certificate of the
 * cluster CA). Where they need not (local trust, QUANTIX_INSECURE) the methods get no caller.
 */
export interface AgentCaller {
  readonly agent: AgentIdentity | undefined;
}

/** How often agents heartbeat (see node-monitor.ts for when a silent node is NOT_READY, then OFFLINE). */
export const HEARTBEAT_INTERVAL_SEC = 10;

/**
 * How recent a heartbeat makes a node's agent live: the silence after which the node
 * monitor marks it NOT_READY (three intervals). A live node's registration is its agent's.
 */
const LIVE_WITHIN_MS = 3 * HEARTBEAT_INTERVAL_SEC * 1000;

const USER_SPEC_PATHS = ["spec.taints", "spec.overcommit", "spec.reserved", "spec.schedulable"];

/** Node registration, reads, operator settings, heartbeats and watch: the use cases behind NodeService. */
export class NodeService {

  /**
   * `nodeLostAfterSec` (QUANTIX_NODE_LOST_AFTER_SEC) is told to agents in heartbeat answers,
   * for self-fencing; absent: 0, not told. `decommission` reaches the nodes' hypervisors;
   * absent, no node's hypervisor is reachable (DecommissionNode then needs force).
   */
  private readonly writer: ResourceWriter<Node>;

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator; nodeLostAfterSec?: number; decommission?: DecommissionDeps }) {
    this.writer = new ResourceWriter(NODE_KIND, deps.store, deps.clock, deps.ids, {
      // Hardware fields belong to the agent (RegisterNode); users write labels and the scheduling settings.
      writable: ["labels", ...USER_SPEC_PATHS],
      unmasked: (draft, req) => {
        const d = draft as UpdateNodeRequest;
        const r = req as unknown as UpdateNodeRequest;
        if (Object.keys(r.labels).length > 0) d.labels = { ...r.labels };
        if (r.spec) {
          d.spec!.taints = r.spec.taints;
          if (r.spec.overcommit) d.spec!.overcommit = r.spec.overcommit;
          if (r.spec.reserved) d.spec!.reserved = r.spec.reserved;
        }
      },
      check: (next) => {
        throwIfViolations(validateNodeSettings(next.spec!));
        next.status = withCapacity(next.status ?? create(NodeStatusSchema), next.spec!);
      },
    });
  }

  /**
   * Registers a host, or refreshes its hardware when the hostname is already registered.
   * A request naming the node id it had (`node_id`) never creates a node for that id's
   * host once the node is gone: NOT_FOUND, checked in the same call that would create it.
   * With a `caller` (agents must prove who they are), only the agent holding the node's
   * certificate registers it, as the node its certificate names.
   */
  async register(req: RegisterNodeRequest, caller?: AgentCaller): Promise<Node> {
    throwIfViolations(validateRegisterNode(req));
    const holder = caller ? certifiedAgent(caller, "RegisterNode") : undefined;
    if (holder && req.hostname !== holder.nodeName) {
      throw new QuantixError("permission_denied", `this agent's certificate is node '${holder.nodeName}' (${holder.nodeId})'s, not '${req.hostname}''s: register with QUANTIX_NODE_NAME=${holder.nodeName}, or enroll this host for '${req.hostname}' with a join token of its own`);
    }
    const now = timestampFromMs(this.deps.clock.now());
    const hardware = (spec: NodeSpec) => {
      spec.cpu = req.cpuInfo;
      spec.memory = req.memoryInfo;
      spec.storage = req.storageDevices;
      spec.network = req.networkDevices;
      spec.agentEndpoint = req.agentEndpoint;
    };
    const existing = (await this.deps.store.of(NODE_KIND).list({ where: { hostname: req.hostname }, order: { field: "hostname", desc: false }, limit: 1 })).items[0];
    if (existing) {
      return this.deps.store.of(NODE_KIND).update(existing.id, (cur) => {
        if (holder) refuseOtherHolder(cur, holder);
        else refuseSecondAgent(cur, req, this.deps.clock.now());
        cur.managementIp = req.managementIp;
        cur.labels = { ...cur.labels, ...req.labels };
        hardware(cur.spec!);
        const status = cur.status ?? create(NodeStatusSchema);
        if (req.hypervisor) status.hypervisor = clone(HypervisorInfoSchema, req.hypervisor);
        status.agentVersion = req.agentVersion;
        cur.status = withCapacity(status, cur.spec!);
        cur.updatedAt = now;
        return cur;
      });
    }
    // A node id this store never knew (its database was replaced) registers the host anew;
    // only a decommissioned node's (its tombstone) is refused.
    const priorId = holder?.nodeId ?? req.nodeId;
    const tombstone = priorId !== "" ? await this.deps.store.of(NODE_TOMBSTONE_KIND).get(priorId) : undefined;
    if (tombstone) {
      throw new QuantixError(
        "not_found",
        holder
          ? `node '${priorId}' (${tombstone.hostname}) was decommissioned; its certificate no longer registers a node: enroll the host again with a new join token`
          : `node '${priorId}' (${tombstone.hostname}) was decommissioned; register without node_id to add the host again`,
      );
    }
    if (holder) {
      const other = await this.deps.store.of(NODE_KIND).get(holder.nodeId);
      if (other) refuseOtherHolder(other, holder);
    }
    const spec = create(NodeSpecSchema, { schedulable: true });
    hardware(spec);
    const status = create(NodeStatusSchema, {
      phase: Phase.PENDING,
      agentVersion: req.agentVersion,
      ...(req.hypervisor ? { hypervisor: req.hypervisor } : {}),
      allocated: create(ResourcesSchema),
    });
    const node = create(NodeSchema, {
      // An enrolled agent's node has the id its certificate names.
      id: holder?.nodeId ?? this.deps.ids.newId(),
      hostname: req.hostname,
      managementIp: req.managementIp,
      labels: req.labels,
      spec,
      status: withCapacity(status, spec),
      createdAt: now,
      updatedAt: now,
    });
    return this.deps.store.of(NODE_KIND).create(node);
  }

  async get(id: string): Promise<Node> {
    requireId("id", id);
    const node = await this.deps.store.of(NODE_KIND).get(id);
    if (!node) throw new QuantixError("not_found", `node '${id}' not found`);
    return node;
  }

  /** Changes labels and the operator's settings; hardware fields belong to the agent. */
  update(req: UpdateNodeRequest): Promise<Node> {
    return this.writer.update(req.id, UpdateNodeRequestSchema, req);
  }

  /** EnableNode / DisableNode; enabling a node also cancels a drain of it still under way. */
  async setSchedulable(id: string, schedulable: boolean): Promise<Node> {
    requireId("id", id);
    const now = timestampFromMs(this.deps.clock.now());
    return updateWithEvents(
      this.deps.store,
      NODE_KIND,
      id,
      (cur) => {
        const drain = cur.spec!.drain;
        const running = !!drain && !drain.cancelled && (cur.status?.drain?.sequence !== drain.sequence || cur.status.drain.phase === DrainStatus_Phase.RUNNING);
        const cancel = schedulable && running;
        if (cur.spec!.schedulable === schedulable && !cancel) return undefined;
        cur.spec!.schedulable = schedulable;
        if (cancel) drain!.cancelled = true;
        cur.updatedAt = now;
        return cur;
      },
      nodeEvents,
      { actor: "api", nowMs: this.deps.clock.now() },
    );
  }

  /** DecommissionNode (node-decommission.ts): removes the node after its VM copies. */
  decommission(req: DecommissionNodeRequest): Promise<{ warning?: string }> {
    return decommissionNode({ store: this.deps.store, clock: this.deps.clock, nodes: this, ...(this.deps.decommission ? { reach: this.deps.decommission } : {}) }, req);
  }

  /** Records a heartbeat: the node is READY unless an operator has put it elsewhere. With a `caller`, only from the agent holding the node's certificate. */
  async heartbeat(req: UpdateHeartbeatRequest, caller?: AgentCaller): Promise<UpdateHeartbeatResponse> {
    requireId("id", req.id);
    const holder = caller ? certifiedAgent(caller, "UpdateHeartbeat") : undefined;
    if (holder && holder.nodeId !== req.id) {
      throw new QuantixError("permission_denied", `this agent's certificate is node ${holder.nodeId}'s (${holder.nodeName}): it heartbeats for that node only, not for ${req.id}`);
    }
    const nowMs = this.deps.clock.now();
    const node = await updateWithEvents(this.deps.store, NODE_KIND, req.id, (cur) => {
      const s = cur.status ?? create(NodeStatusSchema);
      s.lastHeartbeat = timestampFromMs(nowMs);
      if (req.usage) s.usage = req.usage;
      for (const c of req.conditions) s.conditions = setCondition(s.conditions, { type: c.type, status: c.status === 1, reason: c.reason, message: c.message, generation: 0n }, nowMs);
      const notReady = s.conditions.some((c) => c.type === "Ready" && c.status === 2);
      if (s.phase !== Phase.MAINTENANCE && s.phase !== Phase.DRAINING) s.phase = notReady ? Phase.NOT_READY : Phase.READY;
      s.conditions = setCondition(s.conditions, { type: "Heartbeat", status: true, reason: "AgentReporting", message: "the agent is reporting", generation: 0n }, nowMs);
      cur.status = s;
      cur.updatedAt = timestampFromMs(nowMs);
      return cur;
    }, nodeEvents, { actor: "node-agent", nowMs });
    return create(UpdateHeartbeatResponseSchema, { phase: node.status?.phase ?? Phase.UNKNOWN, heartbeatIntervalSec: HEARTBEAT_INTERVAL_SEC, nodeLostAfterSec: this.deps.nodeLostAfterSec ?? 0 });
  }

}

/** The enrolled agent a caller is; UNAUTHENTICATED, saying how to enroll, when it proved none. */
function certifiedAgent(caller: AgentCaller, method: string): AgentIdentity {
  if (caller.agent) return caller.agent;
  throw new QuantixError(
    "unauthenticated",
    `${method} is accepted only from an enrolled agent (a client certificate of the cluster CA naming its node); enroll this agent: quantix agent --join <control plane URL> --join-token <token from CreateJoinToken> --ca-cert <ca.crt> (docs/api/tls-and-enrollment.md)`,
  );
}

/** A node registers only as the node its agent's certificate names: another agent cannot take it over. */
function refuseOtherHolder(node: Node, holder: AgentIdentity): void {
  if (node.id === holder.nodeId && node.hostname === holder.nodeName) return;
  throw new QuantixError(
    "permission_denied",
    `node '${node.hostname}' (${node.id}) is held by the agent with its certificate; this agent's certificate is node '${holder.nodeName}' (${holder.nodeId})'s and cannot take it over`,
  );
}

/**
 * The CPU overcommit ratio of a node that sets none: Nova's initial CPU allocation ratio
 * (4.0), since vCPUs mostly idle. Memory is not overcommitted by default (1.0): a guest
 * that touches memory the host lacks is killed, not slowed down.
 */
export const DEFAULT_CPU_RATIO = 4;

/**
 * A node has one agent: a registration of a node whose agent is live (it heartbeated
 * within LIVE_WITHIN_MS) from an agent that does not carry the node's id (a second agent
 * started with the same name, e.g. the default host name, and another state directory) is
 * refused with ALREADY_EXISTS, else the control plane would drive the first agent's VMs
 * through the second. The same agent re-registering (a restart) carries the id it was
 * given and is let in at once; a node silent that long may be taken over.
 */
function refuseSecondAgent(node: Node, req: RegisterNodeRequest, nowMs: number): void {
  if (req.nodeId === node.id) return;
  const beat = node.status?.lastHeartbeat;
  const silentMs = beat ? nowMs - timestampMs(beat) : Infinity;
  if (node.status?.phase === Phase.OFFLINE || !(silentMs < LIVE_WITHIN_MS)) return;
  throw new QuantixError(
    "already_exists",
    `node '${node.hostname}' (${node.id}) already has a live agent at ${node.spec?.agentEndpoint || "an unknown endpoint"} (last heartbeat ${Math.max(0, Math.round(silentMs / 1000))} s ago); a node has one agent: give this agent another node name (QUANTIX_NODE_NAME or --node-name), or stop the other agent and register again once the node has been silent for ${LIVE_WITHIN_MS / 1000} s`,
  );
}

/** Capacity from the reported hardware; allocatable = capacity × overcommit − reserved. */
export function withCapacity(status: Node["status"] & object, spec: NodeSpec): typeof status {
  const cpus = spec.cpu?.logicalCpus ?? 0;
  const mem = Number(spec.memory?.totalMib ?? 0n);
  const storage = spec.storage.reduce((sum, d) => sum + d.sizeGib, 0n);
  const cpuRatio = spec.overcommit?.cpuRatio || DEFAULT_CPU_RATIO;
  const memRatio = spec.overcommit?.memoryRatio || 1;
  const reservedCpu = spec.reserved?.cpuCores ?? 0;
  const reservedMem = Number(spec.reserved?.memoryMib ?? 0n);
  status.capacity = create(ResourcesSchema, { cpuCores: cpus, memoryMib: BigInt(mem), storageGib: storage });
  status.allocatable = create(ResourcesSchema, {
    cpuCores: Math.max(0, Math.floor(cpus * cpuRatio) - reservedCpu),
    memoryMib: BigInt(Math.max(0, Math.floor(mem * memRatio) - reservedMem)),
    storageGib: storage,
  });
  return status;
}
