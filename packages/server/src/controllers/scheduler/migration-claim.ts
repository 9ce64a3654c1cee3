import { clone, create } from "@bufbuild/protobuf";
import type { Migration, MigrationStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { MigrationStatus_Phase as MPhase } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PlacementPolicySchema, VmSpecSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { schedule, type ClusterState, type ScoringStrategy } from "@quantix/core";
import { setCondition } from "../conditions.js";

/** What deciding a migration's target reads. */
export interface ClaimContext {
  readonly nowMs: number;
  readonly cluster: ClusterState;
  readonly node: (id: string) => Node | undefined;
  readonly strategy: ScoringStrategy;
  readonly isConnected: (nodeId: string) => boolean;
  /** The nodes the VM's volumes let it migrate to (undefined: any); see migrationVolumeNodes. */
  readonly volumeNodeIds?: readonly string[] | undefined;
}

/** A pending migration's fate: its target reserved (both writes in one transaction), or refused with the reason. */
export type Claim =
  | { readonly kind: "claim"; readonly target: string; readonly vm: (s: VmStatus) => void; readonly migration: (s: MigrationStatus) => void }
  | { readonly kind: "fail"; readonly reason: string; readonly code: string; readonly message: string };

/**
 * Decides a pending migration: the scheduler chooses (or checks) its target over the
 * whole cluster with the VM's own placement rules plus "live-migration", the target
 * named when there is one, else any node but the VM's own; when it fits, the VM reserves
 * it (migration_target_node_id: the target's capacity counts the VM until the migration
 * ends) and goes MIGRATING, and the migration is SCHEDULED. A VM that is not RUNNING, or
 * is being deleted, does not migrate.
 */
export function claimMigration(m: Migration, vm: VirtualMachine | undefined, ctx: ClaimContext): Claim {
  if (!vm || vm.deletionRequestedAt) return { kind: "fail", reason: "Deleted", code: "not_found", message: `VM '${m.vmId}' was deleted` };
  const state = vm.status?.state ?? State.UNKNOWN;
  if (vm.status?.migrationTargetNodeId) {
    return { kind: "fail", reason: "Failed", code: "failed_precondition", message: `VM '${vm.id}' is already being migrated from node '${vm.status.nodeId}' to node '${vm.status.migrationTargetNodeId}'; wait for that migration to end` };
  }
  if (state !== State.RUNNING) return { kind: "fail", reason: "Failed", code: "failed_precondition", message: `VM '${vm.id}' is ${State[state]}; only a RUNNING VM migrates live` };
  const source = vm.status!.nodeId;
  const want = m.spec?.targetNodeId ?? "";
  const spec = clone(VmSpecSchema, vm.spec ?? create(VmSpecSchema));
  const placement = (spec.placement ??= create(PlacementPolicySchema));
  if (want) placement.requiredNodeIds = [want];
  else placement.excludedNodeIds = [...new Set([...placement.excludedNodeIds, source])];
  // The node's reported capabilities explain a refusal; the connected driver is checked too.
  if (!placement.requiredCapabilities.includes("live-migration")) placement.requiredCapabilities.push("live-migration");
  const placed = schedule({ id: vm.id, labels: vm.labels, spec, volumeNodeIds: ctx.volumeNodeIds }, ctx.cluster, { strategy: ctx.strategy, isConnected: ctx.isConnected });
  if (!placed.ok) {
    const to = want ? `node '${ctx.node(want)?.hostname ?? want}'` : "any other node";
    return { kind: "fail", reason: "Unschedulable", code: "failed_precondition", message: `VM '${vm.id}' cannot migrate to ${to}: ${placed.message}` };
  }
  const target = placed.nodeId;
  const text = `preparing node '${ctx.node(target)?.hostname ?? target}' to receive the VM`;
  return {
    kind: "claim",
    target,
    vm: (s) => {
      s.state = State.MIGRATING;
      s.errorMessage = "";
      s.migrationTargetNodeId = target;
      s.conditions = setCondition(s.conditions, { type: "Migrating", status: true, reason: "Preparing", message: text, generation: vm.generation }, ctx.nowMs);
    },
    migration: (s) => {
      s.phase = MPhase.SCHEDULED;
      s.sourceNodeId = source;
      s.targetNodeId = target;
      s.message = text;
    },
  };
}
