import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VmService, VmState, type MigrateVmProgress } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import { rejection, until, buildTestGuest, ensureDebianPackages, GUEST_TICK } from "@quantix/testing";
import type { Backend } from "../backend.js";
import { QemuBackend } from "../backends/qemu/qemu-backend.js";
import { isProcessAlive } from "../process-state.js";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

/** One agent: its own state directory, backend, manager and vmm.v1 server. */
interface Agent {
  readonly backend: Backend;
  readonly server: AgentServer;
  readonly client: Client<typeof VmService>;
}

const BOOT_MS = 60_000;
let root: string;
let shared: string;
let boot: { kernelPath: string; initrdPath: string; kernelArgs: string };
const agents: Agent[] = [];

async function startAgent(backend: Backend, sharedDirs: readonly string[]): Promise<Agent> {
  const manager = new VmManager({ backend, sharedDirs });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger });
  const agent = { backend, server, client: createClient(VmService, createGrpcTransport({ baseUrl: server.url })) };
  agents.push(agent);
  return agent;
}

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio"]);
  const guest = await buildTestGuest();
  root = await mkdtemp(path.join(os.tmpdir(), "quantix-migrate-"));
  shared = path.join(root, "shared");
  await mkdir(shared);
  // The guest's files on the "shared storage" both agents declare.
  await copyFile(guest.kernelPath, path.join(shared, "vmlinuz"));
  await copyFile(guest.initrdPath, path.join(shared, "initrd.gz"));
  boot = { kernelPath: path.join(shared, "vmlinuz"), initrdPath: path.join(shared, "initrd.gz"), kernelArgs: guest.kernelArgs };
});

after(async () => {
  for (const a of agents) {
    for (const vm of (await a.client.listVms({}).catch(() => ({ vms: [] }))).vms) await a.client.deleteVm({ vmId: vm.vmId, force: true }).catch(() => undefined);
    await a.server.close();
    await a.backend.close();
  }
  await rm(root, { recursive: true, force: true });
});

/** Every message of a server stream, until it ends. */
async function drain(stream: AsyncIterable<MigrateVmProgress>): Promise<MigrateVmProgress[]> {
  const out: MigrateVmProgress[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

const config = () => ({ cpu: { vcpuCount: 1 }, memory: { sizeBytes: 192n * 1048576n }, boot });
const lastTick = async (a: Agent, vmId: string): Promise<number> => {
  const out = new TextDecoder().decode((await a.client.getConsoleOutput({ vmId, tailBytes: 65536 })).data);
  return Math.max(0, ...[...out.matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1])));
};

test("a running guest moves live between two QEMU agents and keeps counting on the target", { timeout: 150_000 }, async () => {
  const source = await startAgent(new QemuBackend({ stateDir: path.join(root, "a"), kvm: false }), [shared]);
  const target = await startAgent(new QemuBackend({ stateDir: path.join(root, "b"), kvm: false }), [`${shared}/`]);
  const vmId = `mig-${process.pid}`;
  await source.client.createVm({ vmId, config: config() });
  await source.client.bootVm({ vmId });
  await until(async () => ((await lastTick(source, vmId)) >= 3 ? true : undefined), "the guest counting on the source", BOOT_MS, 200);
  const sourcePid = (await source.client.getVmInfo({ vmId })).backendInfo!.processId;

  const prepared = await target.client.prepareMigration({ vmId, config: config() });
  assert.match(prepared.targetUri, /^tcp:127\.0\.0\.1:\d+$/);
  assert.equal((await target.client.getVmInfo({ vmId })).state, VmState.PAUSED, "the target waits for the state");
  const again = await rejection(target.client.prepareMigration({ vmId, config: config() }));
  assert.equal(again.code, Code.AlreadyExists);

  const before = await lastTick(source, vmId);
  const progress = await drain(source.client.migrateVm({ vmId, targetUri: prepared.targetUri, maxDowntimeMs: 300 }));
  const last = progress.at(-1)!;
  assert.ok(last.completed, "the stream ends with the completed message");
  assert.ok(last.statistics!.transferredBytes > 1_000_000n, `bytes transferred: ${last.statistics!.transferredBytes}`);
  assert.ok(last.statistics!.totalTimeMs > 0n && last.statistics!.downtimeMs <= last.statistics!.totalTimeMs);

  // The guest runs on the target and its counter continues from where it was.
  await until(async () => ((await target.client.getVmInfo({ vmId })).state === VmState.RUNNING ? true : undefined), "the target VM running", 10_000, 50);
  await until(async () => ((await lastTick(target, vmId)) > before + 2 ? true : undefined), "the counter continuing on the target", 20_000, 200);
  const firstOnTarget = Number(/quantix-tick (\d+)/.exec(new TextDecoder().decode((await target.client.getConsoleOutput({ vmId, tailBytes: 65536 })).data))?.[1]);
  assert.ok(firstOnTarget > before - 10, `the target's first tick ${firstOnTarget} continues the source's ${before} (no reboot)`);
  // The source forgot the VM and its QEMU is gone.
  assert.equal((await rejection(source.client.getVmInfo({ vmId }))).code, Code.NotFound);
  await until(async () => ((isProcessAlive(sourcePid)) ? undefined : true), "the source QEMU gone", 10_000, 50);
});

test("refused: paths outside the shared directories, backends without live-migration, unknown targets", { timeout: 30_000 }, async () => {
  const qemu = await startAgent(new QemuBackend({ stateDir: path.join(root, "c"), kvm: false }), []);
  const unshared = await rejection(qemu.client.prepareMigration({ vmId: "no-share", config: config() }));
  assert.equal(unshared.code, Code.FailedPrecondition);
  assert.match(unshared.rawMessage, /boot\.kernel_path .*vmlinuz.* not on storage the other host can reach .*VMCP_SHARED_DIRS/);
  assert.equal((await rejection(qemu.client.getVmInfo({ vmId: "no-share" }))).code, Code.NotFound, "nothing was created");

  const sim = new SimulatedBackend({ bootMs: 10 }); // declares no "live-migration", like Firecracker
  const plain = await startAgent(sim, [shared]);
  await plain.client.createVm({ vmId: "sim-1", config: config() });
  await plain.client.bootVm({ vmId: "sim-1" });
  const refused = await rejection(drain(plain.client.migrateVm({ vmId: "sim-1", targetUri: "tcp:127.0.0.1:4444" })));
  assert.equal(refused.code, Code.FailedPrecondition);
  assert.match(refused.rawMessage, /needs the capability "live-migration"/);
  const prep = await rejection(plain.client.prepareMigration({ vmId: "sim-2", config: config() }));
  assert.match(prep.rawMessage, /needs the capability "live-migration"/);
});
