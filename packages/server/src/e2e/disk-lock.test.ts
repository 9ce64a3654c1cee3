import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QemuBackend } from "@quantix/agent";
import { ensureDebianPackages, rejection, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";

/*
 * A failure that reaches the API, with real QEMU (TCG): two VMs on one disk image. The
 * first QEMU holds the image's write lock, so the second QEMU exits at start; StartVM of
 * the second must answer with that reason as soon as the node reports it (not 200 after
 * the deadline), and the VM's status must keep it. No guest needs to boot: QEMU takes the
 * lock when it opens the image, and an empty disk leaves the firmware idle.
 */

let s: TestServer;
let dir: string;
let agent: TestAgent<QemuBackend> | undefined;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils"]);
  s = await startTestServer({ demo: false });
  dir = await mkdtemp(join(tmpdir(), "quantix-disk-lock-"));
});

after(async () => {
  if (agent) {
    for (const vm of await agent.backend.listVMs()) await agent.manager.delete(vm.vmId, true).catch(() => undefined);
    await agent.kill().catch(() => undefined);
    await agent.backend.close();
  }
  await s.close();
  await rm(dir, { recursive: true, force: true });
});

test("a second VM on a disk image another QEMU holds: StartVM answers FAILED_PRECONDITION naming the lock, and the VM shows why", { timeout: 120_000 }, async () => {
  const image = join(dir, "shared.img");
  await promisify(execFile)("qemu-img", ["create", "-q", "-f", "raw", image, "64M"]);
  // The image is in `dir`, the agent's image directory (VMCP_IMAGE_DIRS).
  agent = new TestAgent(new QemuBackend({ stateDir: join(dir, "qemu"), kvm: false }), join(dir, "agent"), `disk-lock-${process.pid}`, undefined, [dir]);
  await agent.start(s.url);
  const nodeId = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent!.name && n.status?.phase === Phase.READY)?.id, "the QEMU agent's node READY", 30_000);
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "root", hostPath: image }] };

  const first = await s.vms.createVM({ name: "holds-the-image", spec, nodeId });
  assert.equal((await s.vms.startVM({ id: first.id }, { timeoutMs: 60_000 })).status?.state, State.RUNNING);

  const second = await s.vms.createVM({ name: "wants-the-image", spec, nodeId });
  const t0 = Date.now();
  const err = await rejection(s.vms.startVM({ id: second.id }, { timeoutMs: 60_000 }));
  const tookMs = Date.now() - t0;
  assert.equal(err.code, Code.FailedPrecondition, err.message);
  assert.match(err.rawMessage, /lock/, err.rawMessage);
  assert.match(err.rawMessage, /PowerStateReached: BootFailed/);
  assert.ok(tookMs < 30_000, `answered in ${tookMs} ms, before the deadline`);

  const failed = await s.vms.getVM({ id: second.id });
  assert.equal(failed.status?.state, State.ERROR);
  assert.match(failed.status!.errorMessage, /lock/);
  const cond = failed.status!.conditions.find((c) => c.type === "PowerStateReached");
  assert.equal(cond?.status, ConditionStatus.FALSE);
  assert.equal(cond?.reason, "BootFailed");
  assert.equal((await s.vms.getVM({ id: first.id })).status?.state, State.RUNNING, "the first VM is untouched");

  for (const vm of [first, second]) await s.vms.deleteVM({ id: vm.id, force: true }, { timeoutMs: 30_000 });
});
