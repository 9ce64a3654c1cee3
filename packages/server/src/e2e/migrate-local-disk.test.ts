import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { MIGRATION_KIND } from "@quantix/core";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QemuBackend, isProcessAlive, startAgentServer, startControlPlaneLink, VmManager } from "@quantix/agent";
import { buildTestGuest, ensureDebianPackages, REPO_ROOT, startTestServer, until, type TestGuest, type TestServer } from "@quantix/testing";
import { lastTick, migratableNode, ticking } from "../testing/migration-nodes.js";
import { silentLogger } from "@quantix/rpc";

/*
 * MigrateVM through the compute API of a VM whose disk is on node-local storage: the
 * disk is copied while the guest runs. Two hosts on one machine: node A is an agent in
 * this process; node B is an agent process in its own mount namespace, where another
 * directory is mounted over the same "local storage" path, so both nodes have their own
 * file at the one host_path the VM's spec names (as two real hosts would) and nothing is
 * shared. Needs root (unshare, mount).
 */

const run = promisify(execFile);
const BOOT_MS = 90_000;
const MAIN = join(REPO_ROOT, "packages/agent/src/main.ts");
let s: TestServer;
let root: string;
let guest: TestGuest;
let local: string;
let agentA: { backend: QemuBackend; server: Awaited<ReturnType<typeof startAgentServer>>; link: ReturnType<typeof startControlPlaneLink> } | undefined;
let agentB: { child: ChildProcess; client: Client<typeof VmService>; exited: Promise<unknown> } | undefined;
const pids = new Set<number>();
let skip: string | false = false;

before(async () => {
  if (process.getuid?.() !== 0) {
    skip = "needs root for a mount namespace (unshare -m)";
    return;
  }
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  root = await mkdtemp(join(tmpdir(), "quantix-migdisk-"));
  local = join(root, "local");
  await mkdir(local);
  await mkdir(join(root, "b-local"));
  s = await startTestServer({ demo: false });

  const backend = new QemuBackend({ stateDir: join(root, "a"), kvm: false });
  const manager = new VmManager({ backend, sharedDirs: [], imageDirs: [guest.imageDir, local] });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, graceMs: 100 });
  const link = startControlPlaneLink({ controlPlane: s.url, agentUrl: server.url, nodeName: `migdisk-a-${process.pid}`, stateDir: join(root, "a"), backend, log: silentLogger, heartbeatMs: 500 });
  agentA = { backend, server, link };

  // Node B: `local` is its own directory (root/b-local) inside its mount namespace.
  const env: Record<string, string | undefined> = { ...process.env, VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false", VMCP_PORT: "0", VMCP_STATE_DIR: join(root, "b"), VMCP_IMAGE_DIRS: `${guest.imageDir},${local}`, QUANTIX_CONTROL_PLANE: s.url, QUANTIX_NODE_NAME: `migdisk-b-${process.pid}` };
  delete env["NODE_TEST_CONTEXT"];
  const child = spawn("unshare", ["-m", "--propagation", "private", "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", join(root, "b-local"), local, process.execPath, "--import", "tsx", MAIN], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise((r) => child.once("exit", r));
  const url = await until(() => {
    if (child.exitCode !== null) throw new Error(`agent B exited: ${err}`);
    return /"url":"(http:[^"]+)"/.exec(out)?.[1];
  }, "agent B listening", 60_000);
  agentB = { child, exited, client: createClient(VmService, createGrpcTransport({ baseUrl: url })) };
});

after(async () => {
  if (skip) return;
  for (const vm of (await s.vms.listVMs({}).catch(() => ({ vms: [] }))).vms) await s.vms.deleteVM({ id: vm.id, force: true }).catch(() => undefined);
  for (const vm of (await agentB?.client.listVms({}).catch(() => ({ vms: [] })))?.vms ?? []) await agentB?.client.deleteVm({ vmId: vm.vmId, force: true }).catch(() => undefined);
  if (agentB && agentB.child.exitCode === null) {
    agentB.child.kill("SIGTERM");
    await agentB.exited;
  }
  if (agentA) {
    await agentA.link.stop();
    await agentA.server.close();
    await agentA.backend.close();
  }
  await s.close();
  for (const pid of pids) if (isProcessAlive(pid)) process.kill(pid, "SIGKILL");
  await rm(root, { recursive: true, force: true });
});


test("MigrateVM copies a node-local disk while the guest runs; the guest keeps counting on the target, whose copy equals the source's disk", { timeout: 300_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const nodeA = await migratableNode(s, `migdisk-a-${process.pid}`);
  const nodeB = await migratableNode(s, `migdisk-b-${process.pid}`);
  const disk = join(local, "data.qcow2");
  await run("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]);
  await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 0 4M", disk]);

  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, disks: [{ id: "data", hostPath: disk }], placement: { preferredNodeIds: [nodeA.id] } };
  const created = await s.vms.createVM({ name: "migdisk", spec, startOnCreate: true });
  const onA = await until(async () => ((v) => (v.status?.state === State.RUNNING ? v : undefined))(await s.vms.getVM({ id: created.id })), "the VM RUNNING", 30_000);
  assert.equal(onA.status?.nodeId, nodeA.id);
  await ticking(s, created.id, 2, BOOT_MS);
  const sourcePid = (await agentA!.backend.getVMInfo(created.id)).pid!;
  pids.add(sourcePid);
  const before = await lastTick(s, created.id);

  const res = await s.vms.migrateVM({ vmId: created.id, targetNodeId: nodeB.id, live: true });
  assert.equal(res.vm?.status?.nodeId, nodeB.id);
  assert.ok(res.stats!.diskBytesTransferred >= 64n << 20n, `disk bytes copied: ${res.stats!.diskBytesTransferred}`);
  assert.ok(res.stats!.bytesTransferred > 1_000_000n && res.stats!.durationMs > 0n && res.stats!.downtimeMs <= res.stats!.durationMs);
  const m = (await s.cp.store.of(MIGRATION_KIND).list({ where: { vm_id: created.id }, order: { field: "created_at", desc: true }, limit: 1, countTotal: false })).items[0]!;
  assert.equal(m.status?.diskTransferredBytes, res.stats!.diskBytesTransferred);

  await ticking(s, created.id, before + 2, 30_000);
  pids.add((await agentB!.client.getVmInfo({ vmId: created.id })).backendInfo!.processId);
  await until(async () => (isProcessAlive(sourcePid) ? undefined : true), "the source QEMU gone", 10_000, 50);
  // Node B's copy is its own file (root/b-local), equal to the source's disk, which is intact.
  const copy = join(root, "b-local", "data.qcow2");
  assert.ok(existsSync(copy) && existsSync(disk));
  const same = await run("qemu-img", ["compare", "-U", "-f", "qcow2", "-F", "qcow2", disk, copy]);
  assert.match(same.stdout, /identical/);
});
