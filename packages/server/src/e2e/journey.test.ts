import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService, type ImportImageProgress } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { StoragePoolState, StoragePoolType, VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { QemuBackend } from "@quantix/agent";
import { debianCloudImage, ensureDebianPackages, startTestServer, TestAgent, until } from "@quantix/testing";

/*
 * The storage journey of a new user, end to end, on real components. Two QEMU agents
 * (TCG) in this process, each with its own state and pool root as two hosts would have,
 * both naming one directory as shared (VMCP_SHARED_DIRS), which holds a SHARED_DIR pool;
 * a LOCAL_DIR pool on each. A minimal Debian with a kernel and cloud-init (built by the
 * tests with Debian's own tools, cached), served over HTTP on loopback, is imported
 * through ImageService into the shared pool, with progress; the root volume is a linked
 * clone of it in the shared pool; a VM boots from it whose cloud-init user-data sets the
 * hostname and runs a command whose output reaches the serial console. Then:
 *   1. live migration to the other node with its disk on the shared pool: nothing copied;
 *   2. a data volume of the node-local pool hot-attached there and seen by the guest,
 *      which writes a marker on it and reads it back every second;
 *   3. a snapshot with memory taken and reverted (the counter goes back), then deleted;
 *   4. live migration back with the hot-attached local volume copied while the guest
 *      runs: the guest still has the disk and reads the marker from the copy.
 */

const HOSTNAME = "journey-vm";
const BOOT_MS = 8 * 60_000;
// The guest prints a counter, the block devices it sees and the marker on the data disk
// (the 1 GiB one, found by its size), every second, from a unit cloud-init starts. The
// marker is written once, when the disk appears blank, and read back with O_DIRECT, so
// what is printed is what the disk holds, not the page cache.
const DATA_SECTORS = 2097152;
const USER_DATA = [
  "#cloud-config",
  `hostname: ${HOSTNAME}`,
  "write_files:",
  "  - path: /usr/local/bin/quantix-loop",
  "    permissions: '0755'",
  "    content: |",
  "      #!/bin/sh",
  "      i=0",
  "      while true; do",
  "        i=$((i+1))",
  "        data=''",
  "        for d in /sys/block/vd*; do",
  `          if [ "$(cat $d/size)" = ${DATA_SECTORS} ]; then`,
  "            dev=/dev/${d##*/}",
  "            data=$(dd if=$dev bs=512 count=1 iflag=direct 2>/dev/null | tr -dc 'a-z0-9-' | head -c 64)",
  "            if [ -z \"$data\" ]; then echo \"quantix-data-$(cut -c1-8 /proc/sys/kernel/random/uuid)\" | dd of=$dev bs=512 count=1 conv=sync oflag=direct 2>/dev/null; fi",
  "          fi",
  "        done",
  "        echo \"quantix-count $i disks $(ls /sys/block | tr '\\n' ' ')data=$data\" > /dev/ttyS0",
  "        sleep 1",
  "      done",
  "runcmd:",
  "  - echo \"quantix-journey-$(hostname)\" > /dev/ttyS0",
  "  - [systemd-run, --unit=quantix-loop, /usr/local/bin/quantix-loop]",
  "",
].join("\n");

test("the journey: import a Debian image over HTTP into a shared pool, boot a linked clone of it with cloud-init, migrate it live on the shared pool, hot-attach a local volume, snapshot with memory and revert, migrate it live back with the local volume copied", { timeout: BOOT_MS + 14 * 60_000 }, async (t) => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "genisoimage"]);
  const image = await debianCloudImage();
  const dir = await mkdtemp(path.join(os.tmpdir(), "quantix-journey-"));
  await mkdir(path.join(dir, "agent", "images"), { recursive: true });
  // The directory both hosts mount (an NFS export, say): VMCP_SHARED_DIRS of both agents.
  const shared = path.join(dir, "shared");
  const sharedPoolDir = path.join(shared, "pool");
  await mkdir(sharedPoolDir, { recursive: true });
  // The image as any web server would serve it.
  const web = createServer((req, res) => {
    if (req.url !== "/debian.qcow2") return void res.writeHead(404).end();
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(image.sizeBytes) });
    createReadStream(image.path).pipe(res);
  });
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(web.address() as AddressInfo).port}/debian.qcow2`;
  const s = await startTestServer({ demo: false, defaultQuota: {}, defaultDeadlineMs: 60_000 });
  // Two hosts: each its own state and pool root, as two machines would have, and the shared directory.
  const agentAt = (sub: string, name: string) => {
    const stateDir = path.join(dir, sub);
    return new TestAgent(new QemuBackend({ stateDir, kvm: false }), stateDir, `${name}-${process.pid}`, 200, [path.join(stateDir, "images")], [shared]);
  };
  const agent = agentAt("agent", "journey");
  const other = agentAt("agent-b", "journey-b");
  let vmId = "";
  try {
    await agent.start(s.url);
    await other.start(s.url);
    const ready = (name: string) => until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === name && n.status?.phase === Phase.READY && n.status.hypervisor?.capabilities.includes("live-migration"))?.id, `the QEMU agent ${name} READY`, 30_000);
    const nodeId = await ready(agent.name);
    const otherId = await ready(other.name);
    const agentOf = (id: string | undefined) => (id === nodeId ? agent : id === otherId ? other : assert.fail(`the VM is on no known node (${id})`));
    const pools = createClient(StoragePoolService, s.transport);
    const images = createClient(ImageService, s.transport);
    const volumes = createClient(VolumeService, s.transport);
    const snapshots = createClient(SnapshotService, s.transport);
    const sharedPool = await pools.createStoragePool({ name: "shared", spec: { type: StoragePoolType.SHARED_DIR, nodeIds: [nodeId, otherId], backend: { case: "sharedDir", value: { path: sharedPoolDir } } } });
    const local = await pools.createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeId, otherId], isDefault: true } });
    for (const p of [sharedPool, local]) await until(async () => ((await pools.getStoragePool({ id: p.id })).status?.state === StoragePoolState.READY ? true : undefined), `the pool ${p.name} READY on the agents`);

    // 1. Import into the shared pool, with progress.
    let t0 = Date.now();
    const steps: ImportImageProgress[] = [];
    for await (const p of images.importImage({ target: { case: "create", value: { name: "debian-12", spec: { poolId: sharedPool.id, source: { source: { case: "url", value: url }, expectedSha256: image.sha256 } } } } }, { timeoutMs: 10 * 60_000 })) steps.push(p);
    const img = steps.at(-1)!.image!;
    assert.equal(img.status?.state, ImageState.AVAILABLE, img.status?.errorMessage);
    assert.equal(img.status?.checksumSha256, image.sha256);
    assert.equal(img.status?.virtualSizeBytes, BigInt(image.virtualSizeBytes));
    const partial = steps.filter((p) => p.state === ImageState.IMPORTING && p.transferredBytes > 0n && p.transferredBytes < p.totalBytes);
    assert.ok(partial.length > 0, `progress showed the download under way: ${steps.map((p) => `${ImageState[p.state]} ${p.transferredBytes}/${p.totalBytes}`).join(", ")}`);
    assert.ok((await stat(path.join(sharedPoolDir, `${img.id}.qcow2`))).isFile(), "the image is in the shared pool's directory");
    t.diagnostic(`import of the ${Math.round(image.sizeBytes / 2 ** 20)} MiB image into the shared pool: ${Date.now() - t0} ms, ${steps.length} progress messages`);

    // 2. The root volume: a linked clone of the image in the shared pool, grown to 4 GiB.
    const root = await volumes.createVolume({ name: "journey-root", spec: { sizeGib: 4n, poolId: sharedPool.id, source: { source: { case: "imageId", value: img.id }, linked: true } } });
    await until(async () => {
      const v = await volumes.getVolume({ id: root.id });
      if (v.status?.state === VolumeState.ERROR) throw new Error(v.status.errorMessage);
      return v.status?.state === VolumeState.AVAILABLE ? v : undefined;
    }, "the root volume AVAILABLE", 120_000);
    const rootFile = path.join(sharedPoolDir, `${root.id}.qcow2`);
    assert.ok((await stat(rootFile)).isFile(), "the root volume is in the shared pool's directory");

    // 3. A VM booted from that volume, with cloud-init user-data.
    const vm = await s.vms.createVM({
      name: "journey",
      spec: { cpu: { cores: 1 }, memory: { sizeMib: 512n }, disks: [{ id: "root", volumeId: root.id, bootIndex: 1 }], provisioning: { cloudInit: { userData: USER_DATA } } },
    });
    vmId = vm.id;
    t0 = Date.now();
    const started = await s.vms.startVM({ id: vm.id }, { timeoutMs: 120_000 });
    assert.equal(started.status?.state, State.RUNNING);
    const first = started.status!.nodeId;
    const second = first === nodeId ? otherId : nodeId;
    const text = async () => new TextDecoder().decode((await s.vms.getConsoleOutput({ vmId: vm.id, tailBytes: 1 << 20 })).data);
    await until(async () => ((await text()).includes(`quantix-journey-${HOSTNAME}`) ? true : undefined), "cloud-init's runcmd output with the hostname on the serial console", BOOT_MS, 1000);
    t.diagnostic(`boot to cloud-init's marker under TCG: ${Date.now() - t0} ms`);
    const counts = async (from = 0) => [...(await text()).slice(from).matchAll(/quantix-count (\d+) disks ([a-z0-9 ]*?) ?data=([a-z0-9-]*)/g)].map((m) => ({ n: Number(m[1]), disks: m[2]!.trim().split(/\s+/), data: m[3]! }));
    const latest = async () => (await counts()).at(-1);
    const counting = (above: number, what: string) => until(async () => (((await latest())?.n ?? 0) > above ? true : undefined), what, 120_000, 500);
    await until(latest, "the guest's loop printing", 120_000, 500);

    // 4. Live migration with the root volume on the shared pool: nothing is copied.
    const beforeFirstMove = (await latest())!.n;
    t0 = Date.now();
    const movedOut = await s.vms.migrateVM({ vmId: vm.id, targetNodeId: second, live: true }, { timeoutMs: 5 * 60_000 });
    assert.equal(movedOut.vm?.status?.nodeId, second);
    assert.equal(movedOut.stats!.diskBytesTransferred, 0n, "a volume of the shared pool is used in place, not copied");
    t.diagnostic(`live migration on the shared pool: ${Date.now() - t0} ms, ${movedOut.stats!.bytesTransferred} bytes of memory, downtime ${movedOut.stats!.downtimeMs} ms, ${movedOut.stats!.diskBytesTransferred} disk bytes`);
    // The target's console starts empty: its first lines come from the guest running there.
    await counting(beforeFirstMove + 3, "the guest counting on the other node");
    assert.equal((await volumes.getVolume({ id: root.id })).status?.state, VolumeState.IN_USE);
    assert.ok((await stat(rootFile)).isFile(), "the root volume's file stays where it was");
    assert.equal((await agentOf(first).backend.listVMs()).length, 0, "the first node's QEMU is gone");

    // 5. A volume of the node-local pool hot-attached there: the guest sees a new block device and writes its marker on it.
    const before = (await latest())!;
    const data = await volumes.createVolume({ name: "journey-data", nodeId: second, spec: { sizeGib: 1n, poolId: local.id, format: VolumeFormat.QCOW2 } });
    await until(async () => ((await volumes.getVolume({ id: data.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "the data volume AVAILABLE");
    await volumes.attachVolume({ id: data.id, vmId: vm.id, diskId: "data" }, { timeoutMs: 60_000 });
    const seen = await until(async () => {
      const c = await latest();
      return c && c.disks.some((d) => !before.disks.includes(d) && d.startsWith("vd")) && c.data.startsWith("quantix-data-") ? c : undefined;
    }, `a new block device in the guest, with the marker written on it (it had ${before.disks.join(" ")})`, 120_000, 500);
    const marker = seen.data;
    t.diagnostic(`the guest's block devices: ${before.disks.join(" ")} -> ${seen.disks.join(" ")}; data disk marker ${marker}`);
    assert.equal((await volumes.getVolume({ id: data.id })).status?.state, VolumeState.IN_USE);

    // 6. A snapshot with memory, taken and reverted: the counter goes back to the snapshot point.
    const at0 = (await latest())!.n;
    const snap = await snapshots.createSnapshot({ name: "journey-live", spec: { target: { case: "vmId", value: vm.id }, includeMemory: true } });
    const taken = await until(async () => {
      const x = await snapshots.getSnapshot({ id: snap.id });
      if (x.status?.state === SnapshotState.ERROR) throw new Error(x.status.errorMessage);
      return x.status?.state === SnapshotState.AVAILABLE ? x : undefined;
    }, "the VM snapshot AVAILABLE", 5 * 60_000, 500);
    assert.equal(taken.status?.memoryIncluded, true);
    const at1 = (await latest())!.n;
    await counting(at1 + 10, "the counter well past the snapshot");
    const past = (await latest())!.n;
    const mark = (await text()).length;
    await snapshots.revertToSnapshot({ id: snap.id });
    await until(async () => {
      const x = await snapshots.getSnapshot({ id: snap.id });
      if (x.status?.conditions.some((c) => c.type === "Reverted" && c.status === 2 /* FALSE */)) throw new Error(x.status.errorMessage);
      return x.status?.observedGeneration === x.generation && x.status.state === SnapshotState.AVAILABLE ? x : undefined;
    }, "the revert done", 5 * 60_000, 500);
    const back = await until(async () => {
      const c = (await counts(mark)).map((x) => x.n);
      return c.some((n) => n >= at0 && n <= at1 + 3) ? c : undefined;
    }, `the counter back near the snapshot point (${at0}..${at1}; it was at ${past})`, 120_000, 500);
    t.diagnostic(`counter at the snapshot ${at0}..${at1}, ${past} before the revert, ${back[0]} after`);
    assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, State.RUNNING);

    // 7. Live migration back, the hot-attached volume of the node-local pool copied while the
    // guest runs. Snapshots live inside the volumes' files, which the copy does not carry:
    // the migration is refused while one exists, so it is deleted first.
    const refused = await s.vms.migrateVM({ vmId: vm.id, targetNodeId: first, live: true }).then(() => undefined, (e: unknown) => e);
    assert.ok(refused instanceof Error && /snapshot .* is kept inside the volume's file/.test(refused.message), String(refused));
    await snapshots.deleteSnapshot({ id: snap.id }, { timeoutMs: 120_000 });
    const beforeMove = (await latest())!.n;
    t0 = Date.now();
    const moved = await s.vms.migrateVM({ vmId: vm.id, targetNodeId: first, live: true }, { timeoutMs: 10 * 60_000 });
    assert.equal(moved.vm?.status?.nodeId, first);
    assert.ok(moved.stats!.diskBytesTransferred > 0n, `disk bytes copied: ${moved.stats!.diskBytesTransferred}`);
    t.diagnostic(`live migration with the local volume copied: ${Date.now() - t0} ms, ${moved.stats!.bytesTransferred} bytes of memory, downtime ${moved.stats!.downtimeMs} ms, ${moved.stats!.diskBytesTransferred} disk bytes`);
    // The guest runs on, with the hot-attached disk where it was, and reads its marker from the copy.
    const after = await until(async () => {
      const c = await latest();
      return c && c.n > beforeMove + 3 ? c : undefined;
    }, "the guest counting on the first node again", 120_000, 500).catch(async (err: unknown) => {
      const info = await agentOf(first).backend.getVMInfo(vm.id).catch((e: unknown) => String(e));
      throw new Error(`${String(err)}; the console: ${JSON.stringify((await text()).slice(-400))}; its VM: ${JSON.stringify(info, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
    });
    assert.deepEqual(after.disks, seen.disks, "the guest still has the same block devices");
    assert.equal(after.data, marker, "the guest reads the marker it wrote before the migration from the copied disk");
    await until(async () => ((await volumes.getVolume({ id: data.id })).status?.nodeId === first ? true : undefined), "the data volume moved to the first node", 60_000);
    assert.ok((await stat(path.join(agentOf(first).stateDir, "pools", local.id, `${data.id}.qcow2`))).isFile(), "the data volume's file is in the first node's pool");
    await assert.rejects(stat(path.join(agentOf(second).stateDir, "pools", local.id, `${data.id}.qcow2`)), "the data volume's file left the other node");
    assert.ok((await stat(rootFile)).isFile(), "the root volume's file is still the shared one");
  } finally {
    if (vmId) await s.vms.deleteVM({ id: vmId, force: true }).catch(() => undefined);
    for (const v of await agent.backend.listVMs().catch(() => [])) if (v.pid) process.kill(v.pid, "SIGKILL");
    for (const v of await other.backend.listVMs().catch(() => [])) if (v.pid) process.kill(v.pid, "SIGKILL");
    await agent.kill().catch(() => undefined);
    await other.kill().catch(() => undefined);
    await agent.backend.close();
    await other.backend.close();
    await s.close();
    await new Promise((resolve) => web.close(resolve));
    await rm(dir, { recursive: true, force: true });
  }
});
