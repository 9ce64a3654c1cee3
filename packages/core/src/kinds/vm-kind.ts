import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** The finalizer every VM carries until the VM controller has removed its guest from its node. */
export const GUEST_FINALIZER = "quantix.io/guest";

/** The component that alone binds VMs to nodes (STYLE rule 2). */
export const SCHEDULER = "scheduler";

/** Virtual machines (Quantixkvm.compute.v1.VirtualMachine). */
export const VM_KIND = defineKind(VirtualMachineSchema, {
  name: "VM",
  table: "quantix_vms",
  fields: {
    project_id: textField((vm) => vm.projectId, { column: "project_id", filter: "eq" }),
    name: textField((vm) => vm.name, { column: "name", filter: "eq", order: true }),
    state: { type: "int", column: "state", filter: "in", value: (vm) => vm.status?.state ?? 0 },
    node_id: textField((vm) => vm.status?.nodeId ?? "", { column: "node_id", filter: "eq" }),
    created_at: timeField((vm) => vm.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (vm) => vm.labels,
  unique: { key: (vm) => `${vm.projectId}/${vm.name}`, describe: (vm) => `a VM named '${vm.name}' already exists in project '${vm.projectId}'` },
  projectScoped: true,
  finalizers: [GUEST_FINALIZER],
  // A VM that is on no node has no guest anywhere (only the VM controller creates guests,
  // on the node the scheduler bound): its deletion has nothing to wait for.
  pendingFinalizers: (vm) => (vm.status?.nodeId || vm.status?.migrationTargetNodeId ? [GUEST_FINALIZER] : []),
  owned: [
    { path: "status.node_id", value: (vm) => vm.status?.nodeId ?? "", owners: [SCHEDULER] },
    { path: "status.migration_target_node_id", value: (vm) => vm.status?.migrationTargetNodeId ?? "", owners: [SCHEDULER] },
  ],
});
