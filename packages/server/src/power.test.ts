import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NODE_KIND, QuantixError, VM_KIND } from "@quantix/core";
import { ON_SIMULATED_NODES, rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { FakeNode } from "./services/migration-test-kit.js";

// The demo's nodes are simulated and tainted: these VMs tolerate it on purpose.
const spec = (cores = 1, sizeMib = 512n) => ({ cpu: { cores }, memory: { sizeMib }, placement: ON_SIMULATED_NODES });

async function expectCode(p: Promise<unknown>, code: Code, includes?: string): Promise<ConnectError> {
  const err = await rejection(p);
  assert.equal(err.code, code, err.message);
  if (includes) assert.match(err.rawMessage, new RegExp(includes));
  return err;
}

describe("VM power actions on simulated nodes", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.close());

  test("the full lifecycle follows the state table and returns observed states", async () => {
    const vm = await s.vms.createVM({ name: "lifecycle", spec: spec() });
    assert.equal(vm.status?.state, State.STOPPED);
    const started = await s.vms.startVM({ id: vm.id });
    assert.equal(started.status?.state, State.RUNNING);
    assert.notEqual(started.status?.nodeId, "", "placed on a node");
    assert.equal(started.status?.hypervisor, "simulated");
    assert.equal(started.status?.observedGeneration, started.generation);

    const again = await s.vms.startVM({ id: vm.id });
    assert.equal(again.resourceVersion, started.resourceVersion, "start on RUNNING changes nothing");

    const paused = await s.vms.pauseVM({ id: vm.id });
    assert.equal(paused.status?.state, State.PAUSED);
    await expectCode(s.vms.startVM({ id: vm.id }), Code.FailedPrecondition, "PAUSED.*ResumeVM");
    assert.equal((await s.vms.resumeVM({ id: vm.id })).status?.state, State.RUNNING);

    const rebooted = await s.vms.rebootVM({ id: vm.id });
    assert.equal(rebooted.status?.state, State.RUNNING);
    assert.ok(rebooted.status!.startedAt!.seconds > started.status!.startedAt!.seconds || rebooted.status!.startedAt!.nanos > started.status!.startedAt!.nanos, "a newer started_at");

    await expectCode(s.vms.deleteVM({ id: vm.id }), Code.FailedPrecondition, "RUNNING.*force");
    assert.equal((await s.vms.stopVM({ id: vm.id })).status?.state, State.STOPPED);
    const stoppedAgain = await s.vms.stopVM({ id: vm.id });
    assert.equal(stoppedAgain.status?.state, State.STOPPED);
    await expectCode(s.vms.pauseVM({ id: vm.id }), Code.FailedPrecondition, "STOPPED");
    await expectCode(s.vms.rebootVM({ id: vm.id }), Code.FailedPrecondition, "STOPPED");
    await s.vms.deleteVM({ id: vm.id });
    await expectCode(s.vms.getVM({ id: vm.id }), Code.NotFound, vm.id);
  });

  test("SuspendVM on a node whose hypervisor lacks 'suspend' is refused at once, naming it, and changes nothing", async () => {
    const vm = await s.vms.createVM({ name: "no-suspend", spec: spec() });
    const running = await s.vms.startVM({ id: vm.id });
    assert.equal(running.status?.state, State.RUNNING);
    const t0 = Date.now();
    await expectCode(s.vms.suspendVM({ id: vm.id }, { timeoutMs: 20_000 }), Code.FailedPrecondition, "lacks the 'suspend' capability");
    assert.ok(Date.now() - t0 < 5000, `answered in ${Date.now() - t0} ms`);
    const after = await s.vms.getVM({ id: vm.id });
    assert.equal(after.spec?.desiredPowerState, running.spec?.desiredPowerState, "desired power state unchanged");
    assert.equal(after.generation, running.generation);
    assert.equal(after.status?.state, State.RUNNING);
    await s.vms.deleteVM({ id: vm.id, force: true });
  });

  test("force delete of a running VM removes its process from the node", async () => {
    const vm = await s.vms.createVM({ name: "doomed", spec: spec(), startOnCreate: true });
    const running = await until(async () => {
      const v = await s.vms.getVM({ id: vm.id });
      return v.status?.state === State.RUNNING ? v : undefined;
    }, "doomed running");
    const hv = s.cp.simulated.hypervisor(running.status!.nodeId)!;
    assert.equal((await hv.observe(vm.id)).power, "running");
    await s.vms.deleteVM({ id: vm.id, force: true });
    await until(async () => ((await hv.observe(vm.id)).power === "absent" ? true : undefined), "process removed");
  });

  test("a crashed guest shows CRASHED with the reason, and StartVM restarts it", async () => {
    const vm = await s.vms.createVM({ name: "crashy", spec: spec() });
    const running = await s.vms.startVM({ id: vm.id });
    s.cp.simulated.hypervisor(running.status!.nodeId)!.crash(vm.id, "qemu: terminating on signal 9");
    const crashed = await until(async () => {
      const v = await s.vms.getVM({ id: vm.id });
      return v.status?.state === State.CRASHED ? v : undefined;
    }, "CRASHED");
    assert.match(crashed.status!.errorMessage, /signal 9/);
    assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, State.RUNNING);
  });

  test("a boot writes the VM's status once: RUNNING and started_at in the same write, none after its watch event", async () => {
    const vm = await s.vms.createVM({ name: "one-write", spec: spec() });
    /** StartVM, then the status writes that said RUNNING once the boot's watch event arrived and every pass it caused ran. */
    const start = async () => {
      const ac = new AbortController();
      const writes: VirtualMachine[] = [];
      const watching = (async () => {
        for await (const ev of s.cp.store.of(VM_KIND).watch(await s.cp.store.revision(), ac.signal)) if (ev.type === "MODIFIED" && ev.object.id === vm.id) writes.push(ev.object);
      })().catch(() => undefined);
      try {
        const started = await s.vms.startVM({ id: vm.id });
        assert.equal(started.status?.state, State.RUNNING);
        assert.ok(started.status?.startedAt, "StartVM answers with started_at");
        const hv = s.cp.drivers.get(started.status.nodeId)!;
        await until(async () => ((await hv.list()).some((o) => o.vmId === vm.id && o.power === "running") ? true : undefined), "the boot's watch event");
        await s.cp.vmController.idle();
        const running = writes.filter((w) => w.status?.state === State.RUNNING);
        assert.deepEqual(running.map((w) => w.status?.startedAt), [started.status.startedAt], "one status write says RUNNING, with started_at");
      } finally {
        ac.abort();
        await watching;
      }
    };
    try {
      // The first boot defines the VM on its node; the second finds it there, shut down.
      await start();
      await s.vms.stopVM({ id: vm.id, force: true });
      await start();
    } finally {
      await s.vms.deleteVM({ id: vm.id, force: true });
    }
  });

  test("a power action returns the transitional state at the client's deadline", async () => {
    const slow = await startTestServer({ simBootMs: 1500, demo: true });
    try {
      const vm = await slow.vms.createVM({ name: "slowboot", spec: spec() });
      const t0 = Date.now();
      const res = await slow.vms.startVM({ id: vm.id }, { timeoutMs: 500 });
      assert.ok(Date.now() - t0 < 500, "answered before the deadline");
      assert.ok([State.PROVISIONING, State.STARTING].includes(res.status!.state), `transitional, got ${State[res.status!.state]}`);
      await until(async () => ((await slow.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), "RUNNING later", 10_000);
    } finally {
      await slow.close();
    }
  });

  test("a VM that fits nowhere stays PENDING with a condition that explains why", async () => {
    const vm = await s.vms.createVM({ name: "huge", spec: spec(4, 1_048_576n) });
    const res = await s.vms.startVM({ id: vm.id }, { timeoutMs: 600 });
    assert.equal(res.status?.state, State.PENDING);
    const cond = res.status!.conditions.find((c) => c.type === "Scheduled");
    assert.ok(cond, "a Scheduled condition");
    assert.match(cond.message, /^0\/3 nodes fit: 3 insufficient memory \(need 1048576 MiB, largest free \d+ MiB\)$/);
    await s.vms.stopVM({ id: vm.id });
    await s.vms.deleteVM({ id: vm.id });
  });
});

// The control plane's rules for SuspendVM, on a fake node that declares "suspend" (fast and
// deterministic). The same path on a real QEMU agent: e2e/real-guest.test.ts and the
// AgentHypervisor port contract over QEMU.
describe("SuspendVM on a node whose hypervisor has 'suspend'", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false });
    const id = "00000000-0000-0000-00bb-000000000001";
    const now = timestampFromMs(Date.now());
    await s.cp.store.of(NODE_KIND).create(create(NodeSchema, {
      id,
      hostname: "suspender",
      spec: { schedulable: true },
      status: { phase: Phase.READY, allocatable: { cpuCores: 8, memoryMib: 8192n }, hypervisor: { type: "fake", capabilities: ["suspend"] }, lastHeartbeat: now },
      createdAt: now,
      updatedAt: now,
    }));
    const node = new FakeNode(id, new Map());
    node.capabilities.add("suspend");
    s.cp.drivers.attach(id, node);
  });
  after(() => s.close());

  test("SuspendVM suspends a running VM, and StartVM starts it again", async () => {
    const vm = await s.vms.createVM({ name: "sleeper", spec: spec() });
    assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, State.RUNNING);
    assert.equal((await s.vms.suspendVM({ id: vm.id })).status?.state, State.SUSPENDED);
    assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, State.RUNNING);
  });
});

/** Registers a READY node in the store whose hypervisor is `node`, listing `capabilities` in its status. */
async function attachFakeNode(s: TestServer, node: FakeNode, hostname: string, capabilities: string[]): Promise<void> {
  const now = timestampFromMs(Date.now());
  await s.cp.store.of(NODE_KIND).create(create(NodeSchema, {
    id: node.id,
    hostname,
    spec: { schedulable: true },
    status: { phase: Phase.READY, allocatable: { cpuCores: 8, memoryMib: 8192n }, hypervisor: { type: "fake", capabilities }, lastHeartbeat: now },
    createdAt: now,
    updatedAt: now,
  }));
  s.cp.drivers.attach(node.id, node);
}

// A node that fails a step (here: the hypervisor does not start, as QEMU does when
// another QEMU holds the VM's disk image) must not leave the VM PROVISIONING in silence.
describe("a step the node fails", () => {
  class FailingNode extends FakeNode {
    bootError: Error | undefined = new QuantixError("failed_precondition", `QEMU exited at start (code 1): qemu-system-x86_64: Failed to get "write" lock / Is another process using the image [/images/shared.img]?`);
    override async bootVM(vmId: string): Promise<void> {
      if (this.bootError) throw this.bootError;
      return super.bootVM(vmId);
    }
  }
  let s: TestServer;
  let node: FailingNode;
  before(async () => {
    s = await startTestServer({ demo: false });
    node = new FailingNode("00000000-0000-0000-00bb-000000000002", new Map());
    await attachFakeNode(s, node, "failing", []);
  });
  after(() => s.close());

  test("StartVM answers FAILED_PRECONDITION with the node's reason at once, and the VM's status keeps it as a condition", async () => {
    const vm = await s.vms.createVM({ name: "locked-disk", spec: spec() });
    const t0 = Date.now();
    const err = await expectCode(s.vms.startVM({ id: vm.id }, { timeoutMs: 20_000 }), Code.FailedPrecondition, `Failed to get "write" lock`);
    assert.ok(Date.now() - t0 < 5000, `answered in ${Date.now() - t0} ms, not at the deadline`);
    assert.match(err.rawMessage, /could not boot the VM/);
    assert.match(err.rawMessage, /PowerStateReached: BootFailed/);
    const failed = await s.vms.getVM({ id: vm.id });
    assert.equal(failed.status?.state, State.ERROR);
    assert.match(failed.status!.errorMessage, /write" lock/);
    const cond = failed.status!.conditions.find((c) => c.type === "PowerStateReached");
    assert.equal(cond?.status, ConditionStatus.FALSE);
    assert.equal(cond?.reason, "BootFailed");
    assert.match(cond!.message, /write" lock/);

    // Once the node can boot it (the other QEMU let go), StartVM starts it and the condition goes.
    node.bootError = undefined;
    const started = await s.vms.startVM({ id: vm.id });
    assert.equal(started.status?.state, State.RUNNING);
    assert.equal(started.status?.conditions.some((c) => c.type === "PowerStateReached"), false);
    assert.equal(started.status?.errorMessage, "");
    await s.vms.stopVM({ id: vm.id, force: true });
  });
});

describe("UpdateVM", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: true });
  });
  after(() => s.close());

  test("update_mask changes only the named paths", async () => {
    const vm = await s.vms.createVM({ name: "masked", description: "before", labels: { a: "1" }, spec: spec(2, 1024n) });
    const up = await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["labels"] }, labels: { b: "2" }, description: "ignored", spec: spec(8, 4096n) });
    assert.deepEqual(up.labels, { b: "2" });
    assert.equal(up.description, "before");
    assert.equal(up.spec?.cpu?.cores, 2);
    assert.equal(up.generation, vm.generation, "labels are not spec");
    const mem = await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["spec.memory.size_mib"] }, spec: spec(8, 4096n) });
    assert.equal(mem.spec?.memory?.sizeMib, 4096n);
    assert.equal(mem.spec?.cpu?.cores, 2);
    assert.equal(mem.generation, vm.generation + 1n);
  });

  test("without a mask the spec is replaced whole", async () => {
    const vm = await s.vms.createVM({ name: "replaced", spec: { ...spec(2, 1024n), disks: [{ id: "root", sizeGib: 10n }] } });
    const up = await s.vms.updateVM({ id: vm.id, spec: spec(3, 2048n) });
    assert.equal(up.spec?.cpu?.cores, 3);
    assert.equal(up.spec?.disks.length, 0);
  });

  test("a stale resource_version is ABORTED and changes nothing", async () => {
    const vm = await s.vms.createVM({ name: "stale", spec: spec() });
    await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: "first", resourceVersion: vm.resourceVersion });
    await expectCode(s.vms.updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: "second", resourceVersion: vm.resourceVersion }), Code.Aborted);
    assert.equal((await s.vms.getVM({ id: vm.id })).description, "first");
  });

  test("unknown or forbidden mask paths are INVALID_ARGUMENT", async () => {
    const vm = await s.vms.createVM({ name: "badmask", spec: spec() });
    await expectCode(s.vms.updateVM({ id: vm.id, updateMask: { paths: ["spec.cpu.bogus"] }, spec: spec() }), Code.InvalidArgument, "update_mask.paths\\[0\\]");
    await expectCode(s.vms.updateVM({ id: vm.id, updateMask: { paths: ["spec.desired_power_state"] }, spec: spec() }), Code.InvalidArgument, "cannot be changed");
    await expectCode(s.vms.updateVM({ id: vm.id, updateMask: { paths: ["spec.cpu.cores"] }, spec: spec(0) }), Code.InvalidArgument, "spec.cpu.cores");
  });

  test("CPU or memory of a running VM cannot change until hotplug exists", async () => {
    const err = await expectCode(
      s.vms.updateVM({ id: "11111111-1111-1111-1111-111111111111", updateMask: { paths: ["spec.cpu.cores"] }, spec: spec(16) }),
      Code.FailedPrecondition,
      "spec.cpu.*RUNNING",
    );
    assert.match(err.rawMessage, /stop the VM first/);
    const ok = await s.vms.updateVM({ id: "11111111-1111-1111-1111-111111111111", updateMask: { paths: ["description"] }, description: "still running" });
    assert.equal(ok.description, "still running");
  });
});
