import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { Code } from "@connectrpc/connect";
import { DEMO_IMAGES } from "./demo-data.js";
import { ON_SIMULATED_NODES, rejection, startTestServer, until, type TestServer } from "@quantix/testing";

// A simulated node runs nothing: a user's real VM placed there was reported RUNNING.
describe("the demo's simulated nodes are tainted", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.close());

  it("a user's VM (direct boot, a host disk) is not placed on them: PENDING, naming the taint", async () => {
    const spec = {
      cpu: { cores: 1 },
      memory: { sizeMib: 256n },
      boot: { directBoot: { kernelPath: "/var/lib/quantix/images/vmlinuz", cmdline: "console=ttyS0" } },
      disks: [{ id: "root", hostPath: "/var/lib/quantix/images/root.img" }],
    };
    const vm = await s.vms.createVM({ name: "real-vm", spec, startOnCreate: true });
    const pending = await until(async () => {
      const v = await s.vms.getVM({ id: vm.id });
      return v.status?.conditions.some((c) => c.type === "Scheduled") ? v : undefined;
    }, "a scheduling decision");
    assert.equal(pending.status?.state, State.PENDING);
    assert.equal(pending.status?.nodeId, "");
    const cond = pending.status!.conditions.find((c) => c.type === "Scheduled")!;
    assert.match(cond.message, /quantix\.io\/simulated/);
    for (const n of (await s.nodes.listNodes({})).nodes) {
      assert.deepEqual(n.spec?.taints.map((t) => t.key), ["quantix.io/simulated"], `${n.hostname} is tainted`);
    }
  });

  it("the demo VMs tolerate the taint and run there, as does a VM that tolerates it on purpose", async () => {
    const demo = (await s.vms.listVMs({})).vms.filter((v) => v.description.startsWith("Demo VM"));
    assert.equal(demo.length, 4);
    for (const v of demo) assert.ok(v.spec?.placement?.tolerations.some((t) => t.key === "quantix.io/simulated"), v.name);
    const web = await until(async () => {
      const v = (await s.vms.listVMs({})).vms.find((x) => x.name === "web-server-01");
      return v?.status?.state === State.RUNNING ? v : undefined;
    }, "web-server-01 RUNNING");
    assert.notEqual(web.status?.nodeId, "");
    const sim = await s.vms.createVM({ name: "sim-on-purpose", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES } });
    assert.equal((await s.vms.startVM({ id: sim.id })).status?.state, State.RUNNING);
  });

  it("a simulated host has the demo's images and no others: a VM naming another is refused at start, ERROR with SpecAccepted naming the path", async () => {
    const disk = (hostPath: string) => ({ cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "root", hostPath }], placement: ON_SIMULATED_NODES });
    const ok = await s.vms.createVM({ name: "demo-image", spec: disk(DEMO_IMAGES.find((p) => p.endsWith(".qcow2"))!) });
    assert.equal((await s.vms.startVM({ id: ok.id })).status?.state, State.RUNNING);
    const bad = await s.vms.createVM({ name: "no-such-image", spec: disk("/var/lib/quantix/images/no-such.img") });
    const err = await rejection(s.vms.startVM({ id: bad.id }));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.rawMessage, /no-such\.img is not an image on this simulated host/);
    const refused = await until(async () => {
      const v = await s.vms.getVM({ id: bad.id });
      return v.status?.state === State.ERROR ? v : undefined;
    }, "the refused VM in ERROR");
    const cond = refused.status!.conditions.find((c) => c.type === "SpecAccepted");
    assert.equal(cond?.reason, "HypervisorRejected");
    assert.match(cond!.message, /config\.storage\[0\]\.path: \/var\/lib\/quantix\/images\/no-such\.img/);
  });
});
