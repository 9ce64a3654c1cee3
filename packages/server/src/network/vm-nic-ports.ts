import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PORT_KIND, QuantixError, type Store } from "@quantix/core";
import { NETWORKS_READY } from "../controllers/vm-status-writer.js";
import { NotReadyYet } from "../controllers/not-ready.js";
import { PortState as AgentPortState } from "@quantix/api/gen/vmm/v1/network_pb.js";
import type { NodeNetwork } from "./node-network.js";

/**
 * Before a VM with NICs on ports is defined on node `nodeId`: every port must be set up
 * there (the network controller applied its network to the node and the agent reports
 * its TAP ACTIVE). While one is not, the VM waits in PROVISIONING with NetworksReady=False
 * naming each NIC and what its port is waiting for (NotReadyYet with that condition);
 * a port that is missing or bound to another device is FAILED_PRECONDITION.
 */
export async function requireNicPorts(store: Store, vm: VirtualMachine, nodeId: string): Promise<void> {
  const waiting: string[] = [];
  for (const [i, nic] of (vm.spec?.nics ?? []).entries()) {
    if (nic.portId === "") continue;
    const p = await store.of(PORT_KIND).get(nic.portId);
    if (!p || p.status?.deviceId !== vm.id) throw new QuantixError("failed_precondition", `spec.nics[${i}].port_id: port '${nic.portId}' ${p ? `is used by '${p.status?.deviceId ?? ""}', not by this VM` : "does not exist"}`);
    if (p.status.nodeId === nodeId && p.status.state === PortState.ACTIVE) continue;
    const why = p.status.conditions.find((c) => c.type === "Ready")?.message || "the network controller has not set it up yet";
    waiting.push(`NIC '${nic.id}' (port '${p.id}'): ${p.status.nodeId === nodeId ? why : `not set up on node '${nodeId}' yet (${why})`}`);
  }
  if (waiting.length > 0) throw new NotReadyYet(`the VM's NICs are being set up on node '${nodeId}': ${waiting.join("; ")}`, { type: NETWORKS_READY, reason: "WaitingForNetwork" });
}

/** How long a migration waits for its target to set the VM's ports up. */
export const TARGET_PORTS_TIMEOUT_MS = 60_000;

/**
 * Waits until node `nodeId`'s agent reports every port of `vm`'s NICs ACTIVE (its TAP on
 * the network's bridge, its filtering applied): what a migration's target needs before
 * PrepareMigration opens the TAPs. UNAVAILABLE naming the ports still missing after
 * `timeoutMs`; ABORTED when `signal` ends it.
 */
export async function waitNicPortsOn(network: (nodeId: string) => NodeNetwork | undefined, vm: VirtualMachine, nodeId: string, signal: AbortSignal, timeoutMs = TARGET_PORTS_TIMEOUT_MS): Promise<void> {
  const want = new Set((vm.spec?.nics ?? []).map((n) => n.portId).filter((id) => id !== ""));
  const deadline = Date.now() + timeoutMs;
  let missing = [...want];
  let last = "";
  for (let delay = 50; ; delay = Math.min(1000, delay * 2)) {
    if (signal.aborted) throw new QuantixError("aborted", "the migration was stopped while its target set the VM's ports up");
    const nn = network(nodeId);
    if (nn) {
      try {
        const active = new Set((await nn.listNetworks()).flatMap((n) => n.ports.filter((p) => p.state === AgentPortState.ACTIVE).map((p) => p.portId)));
        missing = [...want].filter((id) => !active.has(id));
        if (missing.length === 0) return;
      } catch (err) {
        last = `: ${String((err as Error).message ?? err)}`;
      }
    } else last = `: node '${nodeId}' has no connected network data plane`;
    if (Date.now() >= deadline) throw new QuantixError("unavailable", `node '${nodeId}' did not set up the VM's ports ${missing.map((id) => `'${id}'`).join(", ")} within ${timeoutMs / 1000} s${last}; see the ports' and networks' status`);
    await new Promise((r) => setTimeout(r, delay));
  }
}
