import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { CloudInitSchema, ConsoleType, NetworkInterfaceSchema, VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { collect } from "@quantix/testing";
import { SimulatedBackend } from "./backends/simulated/simulated-backend.js";
import { VmManager } from "./vm-manager.js";
import type { VmChange } from "./vm-watch-hub.js";

const MIB = 1024n * 1024n;

/** A config every backend accepts. */
function smallConfig(extra: Pick<MessageInitShape<typeof VmConfigSchema>, "console" | "metadata"> = {}): VmConfig {
  return create(VmConfigSchema, { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 256n * MIB }, boot: { kernelPath: "/var/lib/quantix/vmlinuz", kernelArgs: "console=ttyS0" }, console: extra.console, metadata: extra.metadata ?? {} });
}

async function manager(bootMs = 30) {
  const backend = new SimulatedBackend({ bootMs, consoleIntervalMs: 0 });
  const m = new VmManager({ backend });
  await m.start();
  return { m, backend, [Symbol.asyncDispose]: async () => (m.close(), await backend.close()) };
}

async function failure(p: Promise<unknown>): Promise<QuantixError> {
  const err = await p.then(() => assert.fail("succeeded"), (e: unknown) => e);
  assert.ok(err instanceof QuantixError, String(err));
  return err;
}

test("an invalid config reports every violation at once, by field path", async () => {
  await using w = await manager();
  const bad = create(VmConfigSchema, {
    cpu: { vcpuCount: 0, topology: { sockets: 2, coresPerSocket: 1, threadsPerCore: 1 } },
    memory: { sizeBytes: 100n },
    boot: { kernelPath: "relative/vmlinuz", kernelArgs: "a\nb" },
    storage: [{ id: "d", path: "/x" }, { id: "d", path: "/y\n" }],
    network: [{ id: "n", macAddress: "01:00:00:00:00:01", tapDevice: "../etc" }],
  });
  const err = await failure(w.m.create("../escape", bad));
  assert.equal(err.code, "invalid_argument");
  const fields = err.violations.map((v) => v.field).sort();
  for (const f of ["vm_id", "config.cpu.vcpu_count", "config.cpu.topology", "config.memory.size_bytes", "config.boot.kernel_path", "config.boot.kernel_args", "config.storage[1].id", "config.storage[1].path", "config.network[0].mac_address", "config.network[0].tap_device"]) {
    assert.ok(fields.includes(f), `missing ${f} in ${fields.join(", ")}`);
  }
  assert.deepEqual(await w.backend.listVMs(), []);
});

test("a config needing a capability the backend lacks fails naming it", async () => {
  await using w = await manager();
  const err = await failure(w.m.create("vm-cap", smallConfig({ console: { enabled: true, consoleType: ConsoleType.VIRTIO } })));
  assert.equal(err.code, "failed_precondition");
  assert.match(err.message, /virtio-console/);
});

test("bad cloud-init data is INVALID_ARGUMENT by field path and creates nothing; good data needs the capability", async () => {
  await using w = await manager();
  const bad = smallConfig();
  bad.cloudInit = create(CloudInitSchema, { userData: "x".repeat(65_537), metaData: "local-hostname: not_a_host\n", networkConfig: "- not\n- a mapping\n" });
  const err = await failure(w.m.create("vm-ci", bad));
  assert.equal(err.code, "invalid_argument");
  assert.deepEqual(err.violations.map((v) => v.field).sort(), ["config.cloud_init.user_data"], "a document over the limit is not parsed");
  bad.cloudInit.userData = "#cloud-config\n";
  const err2 = await failure(w.m.create("vm-ci", bad));
  assert.deepEqual(err2.violations.map((v) => v.field).sort(), ["config.cloud_init.meta_data", "config.cloud_init.network_config"]);
  bad.cloudInit.metaData = "[1]";
  assert.match((await failure(w.m.create("vm-ci", bad))).violations[0]?.description ?? "", /mapping/);
  assert.deepEqual(await w.backend.listVMs(), []);
  // Valid data on a backend without "cloud-init" (the simulator): refused naming it.
  const good = smallConfig();
  good.cloudInit = create(CloudInitSchema, { userData: "#cloud-config\n" });
  const lacks = await failure(w.m.create("vm-ci", good));
  assert.equal(lacks.code, "failed_precondition");
  assert.match(lacks.message, /config.cloud_init needs the capability "cloud-init"/);
});

test("SuspendVm on a backend without 'suspend' is refused naming it and changes nothing", async () => {
  await using w = await manager();
  await w.m.create("vm-su", smallConfig());
  await w.m.boot("vm-su");
  const err = await failure(w.m.suspend("vm-su"));
  assert.equal(err.code, "failed_precondition");
  assert.match(err.message, /SuspendVm needs the capability "suspend"/);
  assert.equal((await w.backend.getVMInfo("vm-su")).state, "running");
});

test("AttachNic and DetachNic on a backend without 'nic-hotplug' are refused naming it and change nothing", async () => {
  await using w = await manager();
  await w.m.create("vm-nic", smallConfig());
  await w.m.boot("vm-nic");
  const attach = await failure(w.m.attachNic("vm-nic", create(NetworkInterfaceSchema, { id: "eth0", macAddress: "52:54:00:00:00:01", tapDevice: "tap0" })));
  assert.equal(attach.code, "failed_precondition");
  assert.match(attach.message, /AttachNic needs the capability "nic-hotplug"/);
  const detach = await failure(w.m.detachNic("vm-nic", "eth0", 0));
  assert.match(detach.message, /DetachNic needs the capability "nic-hotplug"/);
  assert.equal((await w.backend.getVMInfo("vm-nic")).config.network.length, 0);
  const missing = await failure(w.m.attachNic("vm-nic", undefined));
  assert.equal(missing.code, "invalid_argument");
});

test("CreateVm is idempotent for the same config and refuses a different one", async () => {
  await using w = await manager();
  assert.deepEqual(await w.m.create("vm-a", smallConfig()), { vmId: "vm-a", state: "created" });
  assert.deepEqual(await w.m.create("vm-a", smallConfig()), { vmId: "vm-a", state: "created" });
  const err = await failure(w.m.create("vm-a", smallConfig({ metadata: { x: "1" } })));
  assert.equal(err.code, "already_exists");
  const assigned = await w.m.create("", smallConfig());
  assert.match(assigned.vmId, /^[0-9a-f-]{36}$/);
  assert.equal((await w.backend.listVMs()).length, 2);
});

test("the state table: allowed, idempotent no-ops, and FAILED_PRECONDITION naming the state", async () => {
  await using w = await manager();
  await w.m.create("vm-s", smallConfig());
  assert.equal(await w.m.shutdown("vm-s", false, 0), "created");
  assert.equal((await failure(w.m.pause("vm-s"))).code, "failed_precondition");
  assert.equal((await w.m.boot("vm-s")).state, "running");
  assert.equal((await w.m.boot("vm-s")).state, "running");
  assert.equal(await w.m.pause("vm-s"), "paused");
  assert.equal(await w.m.pause("vm-s"), "paused");
  const boot = await failure(w.m.boot("vm-s"));
  assert.equal(boot.code, "failed_precondition");
  assert.match(boot.message, /PAUSED.*ResumeVm/);
  const del = await failure(w.m.delete("vm-s", false));
  assert.match(del.message, /PAUSED/);
  assert.equal(await w.m.resume("vm-s"), "running");
  assert.equal(await w.m.reboot("vm-s", false), "running");
  assert.equal(await w.m.shutdown("vm-s", true, 0), "shutdown");
  assert.equal((await w.backend.getVMInfo("vm-s")).state, "shutdown");
  await w.m.boot("vm-s");
  await w.m.delete("vm-s", true);
  assert.equal((await failure(w.m.info("vm-s"))).code, "not_found");
  assert.equal((await failure(w.m.delete("vm-s", true))).code, "not_found");
});

test("calls on one VM are serialised: a pause sent during a boot waits for it", async () => {
  await using w = await manager(100);
  await w.m.create("vm-q", smallConfig());
  const [booted, paused] = await Promise.all([w.m.boot("vm-q"), w.m.pause("vm-q")]);
  assert.equal(booted.state, "running");
  assert.equal(paused, "paused");
  assert.equal((await w.backend.getVMInfo("vm-q")).state, "paused");
});

test("ListVms pages with an opaque token, filters by state and counts the total", async () => {
  await using w = await manager(1);
  for (const id of ["vm-1", "vm-2", "vm-3", "vm-4", "vm-5"]) await w.m.create(id, smallConfig());
  await w.m.boot("vm-2");
  await w.m.boot("vm-4");
  const seen: string[] = [];
  let token = "";
  do {
    const page = await w.m.list({ pageSize: 2, pageToken: token, orderBy: "" });
    assert.equal(page.totalCount, 5);
    assert.ok(page.vms.length <= 2);
    seen.push(...page.vms.map((v) => v.vmId));
    token = page.nextPageToken;
  } while (token !== "");
  assert.deepEqual(seen, ["vm-1", "vm-2", "vm-3", "vm-4", "vm-5"]);
  const running = await w.m.list({ state: "running", pageSize: 0, pageToken: "", orderBy: "vm_id desc" });
  assert.deepEqual(running.vms.map((v) => v.vmId), ["vm-4", "vm-2"]);
  assert.equal(running.totalCount, 2);
  assert.equal((await failure(w.m.list({ pageSize: 2000, pageToken: "", orderBy: "" }))).code, "invalid_argument");
  assert.equal((await failure(w.m.list({ pageSize: 1, pageToken: "garbage!", orderBy: "" }))).code, "invalid_argument");
});

test("watch sends the snapshot, SYNCED, then changes from calls and from the backend", async () => {
  await using w = await manager(1);
  await w.m.create("vm-w1", smallConfig({ metadata: { owner: "cp" } }));
  const ac = new AbortController();
  const it = w.m.watch(ac.signal)[Symbol.asyncIterator]();
  const source = { [Symbol.asyncIterator]: () => it };
  const first = await collect<VmChange>(source, (xs) => xs.some((x) => x.type === "synced"));
  assert.deepEqual(first.map((x) => [x.type, x.vmId, x.state]), [["existing", "vm-w1", "created"], ["synced", "", undefined]]);
  assert.deepEqual(first[0]!.metadata, { owner: "cp" });
  const booted = await w.m.boot("vm-w1");
  w.backend.simulateCrash("vm-w1", "out of memory");
  const later = await collect<VmChange>(source, (xs) => xs.some((x) => x.state === "crashed"));
  assert.deepEqual(later.map((x) => [x.type, x.state, x.reason]), [["changed", "running", "BootVm"], ["changed", "crashed", "out of memory"]]);
  assert.ok(later[0]!.startedAtMs !== undefined);
  // The boot's answer says when the guest started, as its event does: the caller needs neither.
  assert.deepEqual(booted, { state: "running", startedAtMs: later[0]!.startedAtMs });
  ac.abort();
  assert.equal((await it.next()).done, true);
});

test("a forced ShutdownVm or DeleteVm preempts a slow graceful one instead of queuing behind it", async () => {
  const backend = new SimulatedBackend({ bootMs: 1, shutdownMs: 20_000, consoleIntervalMs: 0 });
  const m = new VmManager({ backend });
  await m.start();
  try {
    for (const id of ["vm-g1", "vm-g2"]) {
      await m.create(id, smallConfig());
      await m.boot(id);
    }
    const graceful1 = m.shutdown("vm-g1", false, 60);
    const graceful2 = m.shutdown("vm-g2", false, 60);
    const t0 = Date.now();
    assert.equal(await m.shutdown("vm-g1", true, 0), "shutdown");
    await m.delete("vm-g2", true);
    // The guest takes 20 s to power off gracefully: anything near that means the forced call waited.
    assert.ok(Date.now() - t0 < 5000, `forced calls took ${Date.now() - t0} ms`);
    assert.equal(await graceful1, "shutdown");
    assert.equal(await graceful2, "shutdown");
    assert.equal((await backend.getVMInfo("vm-g1")).state, "shutdown");
    assert.equal((await failure(m.info("vm-g2"))).code, "not_found");
  } finally {
    m.close();
    await backend.close();
  }
});

test("creation order and page tokens survive an agent restart (created_at persists in the state dir)", async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-created-at-"));
  // One backend outlives both managers, as QEMU processes outlive an agent; recover() re-adopts them.
  const backend = new SimulatedBackend({ bootMs: 1, consoleIntervalMs: 0 });
  backend.recover = async () => (await backend.listVMs()).map((v) => v.vmId);
  let t = 1000;
  const clock = { now: () => t++ };
  try {
    const first = new VmManager({ backend, clock, stateDir });
    await first.start();
    for (const id of ["vm-c", "vm-a", "vm-b"]) await first.create(id, smallConfig());
    const page = await first.list({ pageSize: 1, pageToken: "", orderBy: "created_at" });
    assert.deepEqual(page.vms.map((v) => v.vmId), ["vm-c"]);
    first.close();
    t = 5000; // the restarted agent's clock is later than every creation
    const second = new VmManager({ backend, clock: { now: () => t }, stateDir });
    await second.start();
    const all = await second.list({ pageSize: 0, pageToken: "", orderBy: "created_at" });
    assert.deepEqual(all.vms.map((v) => v.vmId), ["vm-c", "vm-a", "vm-b"]);
    const rest = await second.list({ pageSize: 10, pageToken: page.nextPageToken, orderBy: "created_at" });
    assert.deepEqual(rest.vms.map((v) => v.vmId), ["vm-a", "vm-b"], "a token from before the restart still pages on");
    second.close();
  } finally {
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});
