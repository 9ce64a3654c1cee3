import assert from "node:assert/strict";
import { test } from "node:test";
import { vmPaths as qemuPaths } from "./backends/qemu/qemu-vm-dir.js";
import { vmPaths as restPaths } from "./backends/rest-vmm/vm-dir.js";
import { validateVmId } from "./vm-config-validation.js";

// The manager's validation and every backend's state directory agree on which ids exist.
const ids = ["vm-1", "a", "0_x", "x".repeat(63), "vm.1", ".", "..", "-vm", "x".repeat(64), "a/b", ""];

test("one VM id pattern: validation, the QEMU and the CH/FC state directories accept exactly the same ids", () => {
  for (const id of ids) {
    const valid = validateVmId("vm_id", id).length === 0;
    const qemu = accepts(() => qemuPaths("/var/lib/quantix/qemu", id));
    const rest = accepts(() => restPaths("/tmp/qx", id));
    assert.equal(qemu, valid, `QEMU and validation disagree on '${id}'`);
    assert.equal(rest, valid, `CH/FC and validation disagree on '${id}'`);
  }
  assert.equal(validateVmId("vm_id", "vm.1").length, 1, "no '.' in ids");
});

function accepts(f: () => unknown): boolean {
  try {
    f();
    return true;
  } catch {
    return false;
  }
}
