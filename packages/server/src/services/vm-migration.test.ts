import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { rejection, startTestServer, until, type TestServer } from "@quantix/testing";

/*
 * MigrateVM and DrainNode refusals on the demo's simulated nodes, whose hypervisor lacks
 * the "live-migration" capability (as Firecracker's does). The real migrations are in
 * e2e/drain.test.ts.
 */

let s: TestServer;
before(async () => {
  s = await startTestServer({ simBootMs: 20 });
});
after(() => s.close());

const running = (id: string) => until(async () => ((vm: VirtualMachine) => (vm.status?.state === State.RUNNING ? vm : undefined))(await s.vms.getVM({ id })), `VM ${id} RUNNING`);

test("MigrateVM is refused up front with the reason, and changes nothing", async () => {
  const vms = (await s.vms.listVMs({})).vms;
  const nodes = (await s.nodes.listNodes({})).nodes;
  const on = vms.find((v) => v.spec?.desiredPowerState === 1)!;
  const vm = await running(on.id);
  const other = nodes.find((n) => n.id !== vm.status!.nodeId)!;

  const noCap = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: other.id, live: true }));
  assert.equal(noCap.code, Code.FailedPrecondition);
  assert.match(noCap.rawMessage, /simulated hypervisor, which lacks the 'live-migration' capability/);
  const picked = await rejection(s.vms.migrateVM({ vmId: vm.id, live: true }));
  assert.equal(picked.code, Code.FailedPrecondition);
  assert.match(picked.rawMessage, /its node '.*' runs a simulated hypervisor, which lacks the 'live-migration' capability/);

  const same = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: vm.status!.nodeId }));
  assert.match(same.rawMessage, /already runs on node/);
  assert.equal((await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: "00000000-0000-0000-0000-00000000beef" }))).code, Code.NotFound);
  assert.equal((await rejection(s.vms.migrateVM({ vmId: "00000000-0000-0000-0000-00000000dead" }))).code, Code.NotFound);
  assert.equal((await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: other.id, maxDowntimeMs: -1 }))).code, Code.InvalidArgument);

  await s.nodes.disableNode({ id: other.id });
  const disabled = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: other.id }));
  assert.match(disabled.rawMessage, /not schedulable/);
  await s.nodes.enableNode({ id: other.id });

  const off = vms.find((v) => v.spec?.desiredPowerState !== 1)!;
  const notRunning = await rejection(s.vms.migrateVM({ vmId: off.id, targetNodeId: other.id }));
  assert.equal(notRunning.code, Code.FailedPrecondition);
  assert.match(notRunning.rawMessage, /only a RUNNING VM migrates live/);

  const still = await s.vms.getVM({ id: vm.id });
  assert.equal(still.status?.nodeId, vm.status!.nodeId);
  assert.equal(still.status?.state, State.RUNNING);
});

test("DrainNode reports the VMs that cannot move, and with force stops them", async () => {
  const vm = (await s.vms.listVMs({})).vms.find((v) => v.spec?.desiredPowerState === 1)!;
  const nodeId = (await running(vm.id)).status!.nodeId;
  const placed = (await s.vms.listVMs({})).vms.filter((v) => v.status?.nodeId === nodeId);

  const report = await s.nodes.drainNode({ id: nodeId });
  assert.equal(report.node?.spec?.schedulable, false, "drained nodes take no new VMs, even when VMs remain");
  const failed = report.failures.find((f) => f.vmId === vm.id);
  assert.match(failed?.reason ?? "", /lacks the 'live-migration' capability/);
  const c = report.node?.status?.conditions.find((x) => x.type === "Drained");
  assert.equal(c?.reason, "DrainIncomplete");
  assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, State.RUNNING, "without force it keeps running");

  const forced = await s.nodes.drainNode({ id: nodeId, force: true, gracePeriodSec: 5 });
  assert.ok(forced.stoppedVmIds.includes(vm.id), `stopped: ${forced.stoppedVmIds.join()} failures: ${forced.failures.map((f) => f.reason).join()}`);
  assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, State.STOPPED);
  // Every VM it had is off the node or stopped; the stopped ones were unplaced by the second drain.
  for (const v of placed) assert.ok(forced.stoppedVmIds.includes(v.id) || forced.migratedVmIds.includes(v.id), `VM ${v.name} handled`);
  assert.equal(forced.failures.length, 0);
});
