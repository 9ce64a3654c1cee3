import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State, type ResourceUsage, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { bootSector, BOOT_SECTOR_MARKER, buildTestGuest, ensureDebianPackages, GUEST_TICK, type TestGuest, isProcessAlive, startTestServer, until, type TestServer } from "@quantix/testing";
import type { AgentNodes } from "../hypervisor/agent-nodes.js";

/*
 * End to end through the compute API: a control plane, a real agent process with the
 * QEMU backend (TCG), and the busybox test guest. One VM goes through boot, console, metrics,
 * pause and resume, a killed QEMU, a killed agent (the guest survives and is adopted)
 * and a stop that ends QEMU. A second VM, with cloud-init data, is suspended to a file
 * (hibernated), survives an agent restart suspended, and resumes where it was.
 */

const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
const decode = (chunks: Uint8Array[]) => new TextDecoder().decode(Buffer.concat(chunks));

let s: TestServer;
let agents: AgentNodes;
let guest: TestGuest;
let stateDir: string;
let port: number;
let agent: ChildProcess | undefined;
let agentLog = "";
/** Disk images the test made in the guest's image directory (removed after it). */
const disks: string[] = [];
const seenPids = new Set<number>();
const nodeName = `e2e-${process.pid}`;

async function freePort(): Promise<number> {
  const srv = createServer().listen(0, "127.0.0.1");
  await once(srv, "listening");
  const p = (srv.address() as { port: number }).port;
  srv.close();
  await once(srv, "close");
  return p;
}

/** Starts the agent binary as an operator would (npm run agent), with TCG and our state dir. */
async function startAgent(): Promise<Client<typeof VmService>> {
  const env: NodeJS.ProcessEnv = { ...process.env, VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false", VMCP_PORT: String(port), VMCP_ADDRESS: "127.0.0.1", VMCP_STATE_DIR: stateDir, VMCP_IMAGE_DIRS: guest.imageDir, QUANTIX_CONTROL_PLANE: s.url, QUANTIX_NODE_NAME: nodeName };
  delete env["NODE_TEST_CONTEXT"];
  const child = spawn(process.execPath, ["--import", "tsx", "packages/agent/src/main.ts"], { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (agentLog = (agentLog + d).slice(-20_000)));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (agentLog = (agentLog + d).slice(-20_000)));
  agent = child;
  const client = createClient(VmService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
  await until(() => client.listVms({}).then(() => true), `the agent answering on port ${port}; its log: ${agentLog}`, 60_000, 100);
  return client;
}

async function killAgent(signal: NodeJS.Signals): Promise<void> {
  const child = agent;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill(signal);
  await exited;
}

const alive = isProcessAlive;

before(async () => {
  guest = await buildTestGuest();
  s = await startTestServer({ demo: false, defaultDeadlineMs: 30_000 });
  // The composition root attaches agent nodes (app.ts); the tests look them up there.
  agents = s.cp.agents!;
  stateDir = await mkdtemp(join(tmpdir(), "quantix-e2e-agent-"));
  port = await freePort();
});

after(async () => {
  await killAgent("SIGTERM");
  for (const pid of seenPids) if (alive(pid)) process.kill(pid, "SIGKILL");
  await s?.close();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
  for (const d of disks) await rm(d, { force: true });
});

test("a real guest through the compute API: boot, console, pause, crash, agent restart, stop", { timeout: 180_000 }, async () => {
  let vmm = await startAgent();
  const nodeId = await until(async () => {
    const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === nodeName);
    return n?.status?.phase === Phase.READY && agents.get(n.id) ? n.id : undefined;
  }, "the agent's node READY and attached", 20_000);
  const vmIn = (id: string, ok: (vm: VirtualMachine) => boolean, what: string, ms = 30_000) =>
    until(async () => ((vm) => (ok(vm) ? vm : undefined))(await s.vms.getVM({ id })), what, ms, 100);
  const pidOf = async (id: string) => (await vmm.getVmInfo({ vmId: id })).backendInfo?.processId ?? 0;

  // A data disk: an image file already on the node (host_path), attached as it is.
  const dataDisk = join(guest.imageDir, `e2e-data-${process.pid}.raw`);
  await writeFile(dataDisk, Buffer.alloc(4 * 1024 * 1024));
  disks.push(dataDisk);
  const spec = {
    cpu: { cores: 1 },
    memory: { sizeMib: 256n },
    boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } },
    disks: [{ id: "data", hostPath: dataDisk }],
  };
  const vm = await s.vms.createVM({ name: "real-guest", spec, nodeId });
  const running = await s.vms.startVM({ id: vm.id });
  assert.equal(running.status?.state, State.RUNNING);
  assert.equal(running.status?.hypervisor, "qemu");
  assert.deepEqual((await vmm.getVmInfo({ vmId: vm.id })).config?.storage.map((d) => [d.id, d.path]), [["data", dataDisk]]);
  const pid1 = await pidOf(vm.id);
  assert.ok(pid1 > 0 && alive(pid1), "a QEMU process runs");
  seenPids.add(pid1);

  // The guest's marker, read back through the control plane.
  await until(async () => (decode([(await s.vms.getConsoleOutput({ vmId: vm.id })).data]).includes(guest.marker) ? true : undefined), "the guest's marker in GetConsoleOutput", 60_000, 250);

  // StreamMetrics: QEMU's real numbers at the interval; only the NICs are not measured.
  const usage: ResourceUsage[] = [];
  for await (const u of s.vms.streamMetrics({ vmId: vm.id, intervalSec: 1 })) if (usage.push(u) === 2) break;
  const [u0, u1] = usage as [ResourceUsage, ResourceUsage];
  const gapMs = timestampMs(u1.sampledAt!) - timestampMs(u0.sampledAt!);
  assert.ok(gapMs >= 800 && gapMs <= 2500, `samples ${gapMs} ms apart at a 1 s interval`);
  assert.ok(u0.cpuSeconds > 0 && u1.cpuSeconds > u0.cpuSeconds, `CPU seconds grow: ${u0.cpuSeconds} then ${u1.cpuSeconds}`);
  assert.ok(u1.cpuUsagePercent >= 0 && u1.cpuUsagePercent <= 100);
  assert.ok(u1.memoryUsedMib > 0n, "QEMU's resident memory");
  assert.deepEqual(u1.notMeasured, ["network_rx_bytes", "network_tx_bytes"]);

  // StreamConsole follows new output; pausing stops it and resuming restarts it.
  const ac = new AbortController();
  const chunks: Uint8Array[] = [];
  const reading = (async () => {
    for await (const c of s.vms.streamConsole({ vmId: vm.id }, { signal: ac.signal })) chunks.push(c.data);
  })().catch(() => undefined);
  await until(() => (decode(chunks).includes(GUEST_TICK) ? true : undefined), "new ticks on StreamConsole");
  assert.equal((await s.vms.pauseVM({ id: vm.id })).status?.state, State.PAUSED);
  await delay(300); // output already on its way when the vCPUs stopped
  const pausedAt = Buffer.concat(chunks).length;
  // Absence can only be shown over a window: the guest ticks five times a second.
  await delay(1500);
  assert.equal(Buffer.concat(chunks).length, pausedAt, "no console output while paused");
  assert.equal((await s.vms.resumeVM({ id: vm.id })).status?.state, State.RUNNING);
  await until(() => (Buffer.concat(chunks).length > pausedAt && decode(chunks).slice(-200).includes(GUEST_TICK) ? true : undefined), "ticks again after resume");
  ac.abort();
  await reading;

  // A killed QEMU is CRASHED with the reason, within seconds; StartVM boots it again.
  process.kill(pid1, "SIGKILL");
  const crashed = await vmIn(vm.id, (x) => x.status?.state === State.CRASHED, "CRASHED after kill -9", 10_000);
  assert.match(crashed.status?.errorMessage ?? "", /SIGKILL|signal/);
  assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, State.RUNNING);
  const pid2 = await pidOf(vm.id);
  assert.ok(pid2 > 0 && pid2 !== pid1 && alive(pid2));
  seenPids.add(pid2);

  // A SIGKILLed agent leaves the guest running; the next agent adopts the same QEMU.
  await killAgent("SIGKILL");
  assert.ok(alive(pid2), "QEMU outlives its agent");
  vmm = await startAgent();
  assert.equal(await pidOf(vm.id), pid2, "the restarted agent adopted the running QEMU");
  const adopted = await vmIn(vm.id, (x) => x.status?.state === State.RUNNING && !x.status.conditions.some((c) => c.type === "NodeReachable"), "RUNNING through the new agent");
  assert.equal(adopted.status?.errorMessage, "");

  // A graceful stop powers the guest off and the QEMU process ends.
  await s.vms.stopVM({ id: vm.id, timeoutSec: 30 });
  await vmIn(vm.id, (x) => x.status?.state === State.STOPPED, "STOPPED", 40_000);
  await until(() => (alive(pid2) ? undefined : true), "the QEMU process gone");
  await s.vms.deleteVM({ id: vm.id });
  await until(() => vmm.getVmInfo({ vmId: vm.id }).then(() => undefined, () => true), "the VM gone from the agent");

  // A VM from a disk image, no kernel: the firmware boots the disk with the lowest boot_index.
  const image = join(guest.imageDir, `e2e-boot-${process.pid}.raw`);
  await writeFile(image, Buffer.concat([bootSector(), Buffer.alloc(1024 * 1024 - 512)]));
  disks.push(image);
  const fromDisk = await s.vms.createVM({ name: "from-disk", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "root", hostPath: image, bootIndex: 1 }] }, nodeId });
  assert.equal((await s.vms.startVM({ id: fromDisk.id })).status?.state, State.RUNNING);
  await until(async () => (decode([(await s.vms.getConsoleOutput({ vmId: fromDisk.id })).data]).includes(BOOT_SECTOR_MARKER) ? true : undefined), "the disk's boot sector on the console", 30_000, 100);
  const diskPid = await pidOf(fromDisk.id);
  seenPids.add(diskPid);
  await s.vms.deleteVM({ id: fromDisk.id, force: true });
  // The agent removes it (a QEMU outlives an agent stopped before it had done so).
  await until(() => vmm.getVmInfo({ vmId: fromDisk.id }).then(() => undefined, () => true), "the disk VM gone from the agent");
  await until(() => (alive(diskPid) ? undefined : true), "the disk VM's QEMU gone");
});

test("cloud-init and hibernation through the compute API: the seed reaches the agent, SuspendVM survives an agent restart, ResumeVM continues the guest", { timeout: 180_000 }, async () => {
  await ensureDebianPackages(["genisoimage"]);
  await killAgent("SIGTERM");
  let vmm = await startAgent();
  const nodeId = await until(async () => {
    const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === nodeName);
    return n?.status?.phase === Phase.READY && n.status.hypervisor?.capabilities.includes("suspend") && agents.get(n.id) ? n.id : undefined;
  }, "the agent's node READY with the suspend capability", 20_000);
  const vmIn = (id: string, ok: (vm: VirtualMachine) => boolean, what: string, ms = 30_000) =>
    until(async () => ((vm) => (ok(vm) ? vm : undefined))(await s.vms.getVM({ id })), what, ms, 100);
  const ticks = async (id: string) => [...decode([(await s.vms.getConsoleOutput({ vmId: id })).data]).matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1]));
  const spec = (metaData: string) => ({
    cpu: { cores: 1 },
    memory: { sizeMib: 256n },
    boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } },
    provisioning: { cloudInit: { userData: "#cloud-config\nruncmd: [echo hello]\n", metaData } },
  });

  // Bad meta-data is refused by the control plane with the field path, and nothing is created.
  const before = (await s.vms.listVMs({})).vms.length;
  const bad = await s.vms.createVM({ name: "ci-bad", spec: spec("- not a mapping\n"), nodeId }).then(() => assert.fail("created"), (e: unknown) => ConnectError.from(e));
  assert.equal(bad.code, Code.InvalidArgument);
  assert.match(bad.rawMessage, /spec\.provisioning\.cloud_init\.meta_data/);
  assert.equal((await s.vms.listVMs({})).vms.length, before);

  const vm = await s.vms.createVM({ name: "ci-hibernate", spec: spec("local-hostname: ci-e2e\n"), nodeId });
  assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, State.RUNNING);
  const onAgent = await vmm.getVmInfo({ vmId: vm.id });
  assert.equal(onAgent.config?.cloudInit?.metaData, "local-hostname: ci-e2e\n");
  const vmDir = join(stateDir, "qemu", "vms", vm.id);
  assert.ok(existsSync(join(vmDir, "cidata.iso")), "the agent built the seed in the VM's directory");
  const pid = onAgent.backendInfo?.processId ?? 0;
  seenPids.add(pid);
  await until(async () => ((await ticks(vm.id)).some((n) => n > 5) ? true : undefined), "the guest counting", 60_000, 250);

  assert.equal((await s.vms.suspendVM({ id: vm.id })).status?.state, State.SUSPENDED);
  const saved = Math.max(...(await ticks(vm.id)));
  assert.equal(alive(pid), false, "QEMU ended");
  assert.ok(existsSync(join(vmDir, "suspend.state")), "the memory is saved in the VM's directory");

  // The agent dies and comes back: the VM is still suspended, on the agent and in the API.
  await killAgent("SIGKILL");
  vmm = await startAgent();
  assert.equal((await vmm.getVmInfo({ vmId: vm.id })).state, VmState.SUSPENDED);
  await vmIn(vm.id, (x) => x.status?.state === State.SUSPENDED && !x.status.conditions.some((c) => c.type === "NodeReachable"), "SUSPENDED through the new agent");

  assert.equal((await s.vms.resumeVM({ id: vm.id })).status?.state, State.RUNNING);
  seenPids.add((await vmm.getVmInfo({ vmId: vm.id })).backendInfo?.processId ?? 0);
  // The new agent's console starts empty: every tick it shows came after the restore.
  await until(async () => ((await ticks(vm.id)).length >= 3 ? true : undefined), "ticks after the resume", 30_000, 100);
  const after = await ticks(vm.id);
  assert.ok(after[0]! >= saved - 2, `the guest continued counting (${after[0]} after ${saved}), it did not boot again`);
  assert.ok(!decode([(await s.vms.getConsoleOutput({ vmId: vm.id })).data]).includes(guest.marker), "no boot marker after the resume");
  assert.equal(existsSync(join(vmDir, "suspend.state")), false, "the saved file is gone after the restore");

  await s.vms.deleteVM({ id: vm.id, force: true });
  await until(() => vmm.getVmInfo({ vmId: vm.id }).then(() => undefined, () => true), "the VM gone from the agent");
  await until(() => (existsSync(vmDir) ? undefined : true), "the VM's directory (seed included) removed");
});
