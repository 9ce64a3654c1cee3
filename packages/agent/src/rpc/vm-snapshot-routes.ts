import type { ServiceImpl } from "@connectrpc/connect";
import type { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import type { VmManager } from "../vm-manager.js";

type SnapshotMethods = Pick<ServiceImpl<typeof VmService>, "snapshotVm" | "revertVmSnapshot" | "deleteVmSnapshot" | "listVmSnapshots">;

/** vmm.v1 VmService's VM snapshot RPCs. */
export function vmSnapshotRoutes(_m: VmManager): SnapshotMethods {
  const notYet = () => {
    throw new QuantixError("unimplemented", "VM snapshots are being built");
  };
  return { snapshotVm: notYet, revertVmSnapshot: notYet, deleteVmSnapshot: notYet, listVmSnapshots: notYet };
}
