import type { DecommissionNodeRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeTombstoneSchema, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type Clock, type HypervisorPort, type Store, VM_KIND, NODE_KIND, NODE_TOMBSTONE_KIND, allOf } from "@quantix/core";
import { withinBudget } from "./wait.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { requireId } from "./vm-service.js";

/** Keeps the VM controller off a VM for a while (VmController.holdForMigration). */
export interface MigrationHolder {
  holdForMigration(vmId: string): () => void;
}

/** What DecommissionNode needs to remove a node's VM copies from its hypervisor. */
export interface DecommissionDeps {
  readonly drivers: NodeDrivers;
  /**
   * Keeps the reconciler off the node's VMs while their copies are removed: it would
   * otherwise boot a VM again that is still placed on the node and was just powered off.
   */
  readonly holder: MigrationHolder;
  readonly log: Logger;
}

/** What {@link decommissionNode} uses; without `reach`, no node's hypervisor is reachable. */
export interface DecommissionContext {
  readonly store: Store;
  readonly clock: Clock;
  readonly nodes: { get(id: string): Promise<Node>; setSchedulable(id: string, schedulable: boolean): Promise<Node> };
  readonly reach?: DecommissionDeps;
}

/**
 * DecommissionNode: refused while VMs are placed on the node unless forced (they become
 * pending). Every VM copy on the node's hypervisor is powered off and deleted before the
 * node goes. A node whose hypervisor does not answer is refused without force (its copies
 * would remain); with force it goes anyway, and the returned warning (also logged) says
 * copies may remain running until the node is fenced.
 */
export async function decommissionNode(c: DecommissionContext, req: DecommissionNodeRequest): Promise<{ warning?: string }> {
  requireId("id", req.id);
  const node = await c.nodes.get(req.id);
  const placed = await placedOn(c.store, req.id);
  if (placed.length > 0 && !req.force) {
    const names = placed.slice(0, 5).map((vm) => vm.name).join(", ");
    throw new QuantixError("failed_precondition", `node '${node.hostname}' still has ${placed.length} VM(s) (${names}${placed.length > 5 ? ", ..." : ""}); drain it first or set force`);
  }
  const reach = await reachDriver(c.reach?.drivers, req.id);
  if ("unreachable" in reach && !req.force) {
    throw new QuantixError("failed_precondition", `node '${node.hostname}' is unreachable (${reach.unreachable}): copies of its VMs would remain running on it; bring its agent back, or set force`);
  }
  // No new placements from here on, then the copies go, then the node, then every VM
  // still on it (read again: one may have been placed between the first read and now)
  // loses it. The reconciler keeps off those VMs meanwhile.
  await c.nodes.setSchedulable(req.id, false);
  const ids = "driver" in reach ? await copiesOn(reach.driver, placed.map((vm) => vm.id)) : [];
  const releases = ids.map((id) => c.reach?.holder.holdForMigration(id));
  let warning: string | undefined;
  try {
    if ("unreachable" in reach) {
      warning = `node '${node.hostname}' was decommissioned while unreachable (${reach.unreachable}): copies of its VMs may remain running on it until the node is fenced`;
    } else {
      const failed = await removeCopies(reach.driver, ids);
      if (failed.length > 0) {
        const what = `${failed.length} VM copy(ies) on node '${node.hostname}' could not be removed (${failed[0]!.vmId}: ${failed[0]!.error})`;
        if (!req.force) throw new QuantixError("failed_precondition", `${what}; they would remain running on it; retry, or set force`);
        warning = `${what}: they may remain running on it until the node is fenced`;
      }
    }
    await removeLeavingTombstone(c, req.id);
    await waitUnplaced(c, req.id);
  } finally {
    for (const release of releases) release?.();
  }
  if (warning) c.reach?.log.log("warn", warning, { node_id: req.id });
  return warning ? { warning } : {};
}

/**
 * Deletes the node and leaves its tombstone in one transaction: its agent, which keeps the
 * node's id, is then told the node was decommissioned when it registers again.
 */
async function removeLeavingTombstone(c: DecommissionContext, nodeId: string): Promise<void> {
  await c.store.transact(async (tx) => {
    const node = await tx.get(NODE_KIND, nodeId);
    if (!node) return;
    tx.delete(NODE_KIND, node);
    if (!(await tx.get(NODE_TOMBSTONE_KIND, nodeId))) {
      tx.create(NODE_TOMBSTONE_KIND, create(NodeTombstoneSchema, { id: nodeId, hostname: node.hostname, decommissionedAt: timestampFromMs(c.clock.now()) }));
    }
  }, { actor: "api" });
}

/**
 * Waits (a bounded while) until no VM is placed on the removed node: the scheduler, the
 * one writer of bindings, unplaces them (reason NodeDecommissioned) once the node is gone.
 */
async function waitUnplaced(c: DecommissionContext, nodeId: string): Promise<void> {
  const from = await c.store.revision();
  if ((await placedOn(c.store, nodeId)).length === 0) return;
  await withinBudget(10_000, new AbortController().signal, async (stop) => {
    for await (const ev of c.store.of(VM_KIND).watch(from, stop)) {
      if (ev.type !== "SYNCED" && ev.object.status?.nodeId !== nodeId && (await placedOn(c.store, nodeId)).length === 0) return;
    }
  });
}

async function placedOn(store: Store, nodeId: string): Promise<VirtualMachine[]> {
  const out: VirtualMachine[] = [];
  for await (const vm of allOf(store.of(VM_KIND), { where: { node_id: nodeId } })) out.push(vm);
  return out;
}

/** The node's hypervisor when it answers now, or why it cannot be reached. */
async function reachDriver(drivers: NodeDrivers | undefined, nodeId: string): Promise<{ driver: HypervisorPort } | { unreachable: string }> {
  const driver = drivers?.get(nodeId);
  if (!driver) return { unreachable: "no hypervisor connection to it (its agent is not attached)" };
  try {
    await driver.ping();
    return { driver };
  } catch (err) {
    return { unreachable: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Every VM copy on the node: the ones the store places there and any other its hypervisor
 * reports (the node is leaving; nothing on it may keep running).
 */
async function copiesOn(driver: HypervisorPort, placedIds: readonly string[]): Promise<string[]> {
  const ids = new Set(placedIds);
  for (const obs of await driver.list()) ids.add(obs.vmId);
  return [...ids];
}

/**
 * Powers off and deletes VM copies on a node's hypervisor (the port's deleteVM removes the
 * VM and its process, powering it off first). Tries every one; returns those that could
 * not be removed, with the reason.
 */
async function removeCopies(driver: HypervisorPort, ids: readonly string[]): Promise<{ vmId: string; error: string }[]> {
  const failed: { vmId: string; error: string }[] = [];
  for (const vmId of ids) {
    try {
      await driver.deleteVM(vmId);
    } catch (err) {
      failed.push({ vmId, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return failed;
}
