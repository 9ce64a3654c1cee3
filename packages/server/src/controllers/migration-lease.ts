import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

/** How long a Migrating=True condition without a new write holds a VM for the replica migrating it. */
export const MIGRATION_LEASE_MS = 30_000;

/** Whether the VM was written by its migration within the lease (its updated_at is recent). */
export function leaseFresh(vm: VirtualMachine, nowMs: number): boolean {
  const updated = vm.updatedAt ? timestampMs(vm.updatedAt) : 0;
  return nowMs - updated < MIGRATION_LEASE_MS;
}

/** Whether a migration (on any replica) holds the VM now: it is marked migrating and its lease is fresh. */
export function migratingElsewhere(vm: VirtualMachine, nowMs: number): boolean {
  const migrating = !!vm.status?.migrationTargetNodeId || vm.status?.conditions.some((c) => c.type === "Migrating" && c.status === ConditionStatus.TRUE);
  return !!migrating && leaseFresh(vm, nowMs);
}
