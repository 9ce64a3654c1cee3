import { NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { httpAgentConnection } from "./agent-connection.js";
import { refusalOf, writeAgentIdentity, type EnrolledOnly } from "./agent-identity-check.js";
import { AgentHypervisor } from "./agent-hypervisor.js";
import type { NodeDrivers } from "./node-drivers.js";
import { NODE_KIND, allOf, systemClock, VM_KIND, type Clock } from "@quantix/core";

/** What {@link attachAgentNodes} needs from the composition root. */
export interface AgentNodesDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly log: Logger;
  /** The store's cluster id, marked on the VMs the agents create. */
  readonly clusterId?: string;
  /**
   * Talk to enrolled agents only (TLS configured): each over mutual TLS, and only once its
   * endpoint answered with the node's certificate; a node whose endpoint does not is not
   * attached, and its AgentIdentity condition says why. Absent: cleartext, as registered.
   */
  readonly enrolledOnly?: EnrolledOnly;
  readonly clock?: Clock;
}

/** A running attachment; stop() detaches every agent and closes its connection. */
export interface AgentNodes {
  /** The agent hypervisor attached for a node, if any (tests). */
  get(nodeId: string): AgentHypervisor | undefined;
  stop(): Promise<void>;
}

/** How often an attached enrolled agent's endpoint is checked again (on the node's next change: its heartbeats). */
const RECHECK_MS = 60_000;

/**
 * Keeps `drivers` in step with the store's nodes: every node with an agent_endpoint
 * (and no in-process driver) gets an {@link AgentHypervisor}, re-made when the
 * endpoint changes and removed when the node is decommissioned. A node whose heartbeats
 * stopped (OFFLINE) or whose hypervisor is down (NOT_READY) is marked down, so its VMs'
 * status says the node is unreachable instead of the last state seen.
 */
export function attachAgentNodes(deps: AgentNodesDeps): AgentNodes {
  const agents = new Map<string, AgentHypervisor>();
  /** When each node's endpoint was last checked for its agent's certificate. */
  const checkedAt = new Map<string, number>();
  const abort = new AbortController();

  const detach = async (nodeId: string): Promise<void> => {
    const hv = agents.get(nodeId);
    if (!hv) return;
    agents.delete(nodeId);
    checkedAt.delete(nodeId);
    deps.drivers.detach(nodeId);
    await hv.close();
    deps.log.log("info", "agent detached", { node_id: nodeId });
  };

  const sync = async (node: Node, deleted: boolean): Promise<void> => {
    const endpoint = node.spec?.agentEndpoint ?? "";
    const type = node.status?.hypervisor?.type ?? "";
    if (deleted || endpoint === "") return detach(node.id);
    let hv = agents.get(node.id);
    // A node another driver serves (a demo node's in-process simulated host) is left to it.
    if (!hv && deps.drivers.has(node.id)) return;
    if (hv && hv.endpoint !== endpoint) {
      await detach(node.id);
      hv = undefined;
    }
    const secure = deps.enrolledOnly;
    const nowMs = (deps.clock ?? systemClock).now();
    // Checked before attaching, and again now and then while attached (what answers at an
    // endpoint can change: another process on the agent's port refuses every call, and the
    // node's status should say why rather than only "unreachable").
    if (secure && (!hv || nowMs - (checkedAt.get(node.id) ?? 0) >= RECHECK_MS)) {
      checkedAt.set(node.id, nowMs);
      const refusal = await refusalOf(node, endpoint, secure);
      await writeAgentIdentity(deps.store, node, refusal, nowMs);
      if (refusal) {
        deps.log.log("warn", "agent not attached: its endpoint did not prove it is the node's enrolled agent", { node_id: node.id, endpoint, reason: refusal.reason, error: refusal.message });
        if (hv) await detach(node.id);
        return;
      }
    }
    if (!hv) {
      const created = new AgentHypervisor({
        connection: httpAgentConnection(endpoint, secure?.dial ? { dial: secure.dial, nodeId: node.id } : undefined),
        node: node.hostname,
        kind: type || "unknown",
        version: node.status?.hypervisor?.version ?? "",
        capabilities: node.status?.hypervisor?.capabilities ?? [],
        log: deps.log,
        ...(deps.clusterId !== undefined ? { clusterId: deps.clusterId } : {}),
        // The agent may have lost VMs the store places on it (a wiped host): look at those too.
        onSynced: () => void touchPlaced(node.id, created).catch((err: unknown) => deps.log.log("warn", "listing a node's VMs failed", { node_id: node.id, error: String(err) })),
      });
      hv = created;
      agents.set(node.id, hv);
      deps.drivers.attach(node.id, hv);
      hv.start();
      deps.log.log("info", "agent attached", { node_id: node.id, hostname: node.hostname, endpoint });
    }
    hv.setNodeDown(downReason(node));
  };

  const touchPlaced = async (nodeId: string, hv: AgentHypervisor): Promise<void> => {
    for await (const vm of allOf(deps.store.of(VM_KIND), { where: { node_id: nodeId } })) hv.touch(vm.id);
  };

  const loop = async (): Promise<void> => {
    while (!abort.signal.aborted) {
      try {
        const page = await deps.store.of(NODE_KIND).list({ order: { field: "hostname", desc: false }, limit: 100_000 });
        const seen = new Set(page.items.map((n) => n.id));
        for (const id of [...agents.keys()]) if (!seen.has(id)) await detach(id);
        for (const n of page.items) await sync(n, false);
        for await (const ev of deps.store.of(NODE_KIND).watch(page.revision, abort.signal)) {
          if (ev.type !== "SYNCED") await sync(ev.object, ev.type === "DELETED");
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        deps.log.log("warn", "node watch for agents interrupted; listing again", { error: String(err) });
      }
    }
  };
  const running = loop();

  return {
    get: (nodeId) => agents.get(nodeId),
    async stop() {
      abort.abort();
      await running;
      for (const id of [...agents.keys()]) await detach(id);
    },
  };
}

/** Why a node cannot be trusted to run its VMs now, from its phase; undefined when it can. */
export function downReason(node: Node): string | undefined {
  const s = node.status;
  const said = (type: string) => s?.conditions.find((c) => c.type === type)?.message;
  switch (s?.phase ?? Phase.UNKNOWN) {
    case Phase.OFFLINE:
      return `its heartbeats stopped (node OFFLINE${said("Heartbeat") ? `: ${said("Heartbeat")}` : ""})`;
    case Phase.NOT_READY:
      return s?.conditions.find((c) => c.type === "Heartbeat")?.reason === "HeartbeatMissed"
        ? `it is unreachable: its heartbeats stopped (node NOT_READY: ${said("Heartbeat")})`
        : `its hypervisor is not ready (node NOT_READY${said("Ready") ? `: ${said("Ready")}` : ""})`;
    default:
      return undefined;
  }
}
