import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { VmConfigSchema, VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { SimulatedBackend } from "./backends/simulated/simulated-backend.js";
import { createSimulatedHost } from "./simulated-host.js";

const base = { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 256n << 20n } };
const config = create(VmConfigSchema, base);

test("a simulated host re-adopts the guests it is given, and serves vmm.v1 in memory", async () => {
  const host = await createSimulatedHost({ bootMs: 5, running: [{ vmId: "seeded", config, startedAtMs: 1_700_000_000_000 }], log: silentLogger, images: [] });
  try {
    const vmm = createClient(VmService, host.transport);
    const info = await vmm.getVmInfo({ vmId: "seeded" });
    assert.equal(info.state, VmState.RUNNING);
    assert.deepEqual((await vmm.listVms({})).vms.map((v) => v.vmId), ["seeded"]);
    const first = await (async () => {
      for await (const ev of vmm.watchVms({})) return ev;
      return undefined;
    })();
    assert.equal(first && timestampMs(first.startedAt!), 1_700_000_000_000, "started when the previous agent said");
    await vmm.shutdownVm({ vmId: "seeded" });
    assert.equal((await vmm.getVmInfo({ vmId: "seeded" })).state, VmState.SHUTDOWN);
    // The agent's own rules and error mapping: a missing VM is NOT_FOUND over the transport.
    const missing = await vmm.bootVm({ vmId: "nope" }).catch((e: unknown) => ConnectError.from(e));
    assert.equal((missing as ConnectError).code, Code.NotFound);
  } finally {
    await host.close();
  }
});

test("a simulated host declares neither console nor metrics, and says so in its health and refusals", async () => {
  const host = await createSimulatedHost({ bootMs: 5, running: [], log: silentLogger, images: [] });
  try {
    assert.equal(host.hypervisor.type, "simulated");
    for (const c of ["pause", "reboot", "graceful-shutdown", "firmware-boot"]) assert.ok(host.hypervisor.capabilities.includes(c), c);
    for (const c of ["console", "metrics", "live-migration", "readopt"]) assert.ok(!host.hypervisor.capabilities.includes(c), c);
    const health = await host.health();
    assert.equal(health.status, 200);
    assert.deepEqual((health.body["backend"] as { capabilities: string[] }).capabilities, host.hypervisor.capabilities);
    const vmm = createClient(VmService, host.transport);
    await vmm.createVm({ vmId: "quiet", config });
    const err = await vmm.getConsoleOutput({ vmId: "quiet" }).catch((e: unknown) => ConnectError.from(e));
    assert.equal((err as ConnectError).code, Code.FailedPrecondition);
    assert.match((err as ConnectError).rawMessage, /"console"/);
  } finally {
    await host.close();
  }
});

test("the simulator declares only what it can emulate", () => {
  assert.deepEqual([...new SimulatedBackend({ capabilities: ["pause"] }).capabilities], ["pause"]);
  assert.throws(() => new SimulatedBackend({ capabilities: ["live-migration"] }), /cannot emulate live-migration/);
});

test("a simulated host has the images it was given and no others: a VM naming another path is refused, naming the field, and nothing is created", async () => {
  const images = ["/var/lib/quantix/images/root.img", "/var/lib/quantix/images/vmlinuz"];
  const host = await createSimulatedHost({ bootMs: 5, running: [], log: silentLogger, images });
  try {
    const vmm = createClient(VmService, host.transport);
    const withDisk = (path: string) => create(VmConfigSchema, { ...base, storage: [{ id: "root", path }] });
    await vmm.createVm({ vmId: "has-image", config: withDisk(images[0]!) });
    const err = await vmm.createVm({ vmId: "no-image", config: withDisk("/var/lib/quantix/images/missing.img") }).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError, "the create was refused");
    assert.equal(err.code, Code.InvalidArgument);
    const detail = err.findDetails(BadRequestSchema)[0];
    assert.deepEqual(detail?.fieldViolations.map((v) => [v.field, v.reason]), [["config.storage[0].path", "NOT_FOUND"]]);
    assert.match(detail!.fieldViolations[0]!.description, /missing\.img is not an image on this simulated host; its images are .*root\.img/);
    const direct = await vmm.createVm({ vmId: "no-kernel", config: create(VmConfigSchema, { ...base, boot: { kernelPath: "/boot/vmlinuz" } }) }).catch((e: unknown) => ConnectError.from(e));
    assert.equal((direct as ConnectError).code, Code.InvalidArgument);
    assert.deepEqual((await vmm.listVms({})).vms.map((v) => v.vmId), ["has-image"], "no refused VM was created");
  } finally {
    await host.close();
  }
});
