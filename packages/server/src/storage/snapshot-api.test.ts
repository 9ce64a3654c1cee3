import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { SnapshotState, type Snapshot } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { StoragePoolState, StoragePoolType, VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages, rejection, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";

// Volume snapshots through the real API, on both kinds of node storage in one control
// plane: a demo simulated host (DirNodeStorage: qemu-img in this process) and a node run
// by a host agent (AgentNodeStorage: the agent's vmm.v1.StorageService). The volume's
// contents are written and read with the real qemu-io, so a revert is seen in the data;
// the tree (parent, current) follows takes, reverts and deletes; bad input changes nothing.

const run = promisify(execFile);
const HV1 = "00000000-0000-0000-0001-000000000001";
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

/** Writes 64 KiB of `byte` at offset 0 of a qcow2 file. */
async function writePattern(file: string, byte: number): Promise<void> {
  await run("qemu-io", ["-f", "qcow2", "-c", `write -P ${byte} 0 64k`, file], { timeout: 30_000 });
}

/** Whether the first 64 KiB of a qcow2 file are all `byte` (qemu-io's read -P says "Pattern verification failed" otherwise). */
async function hasPattern(file: string, byte: number): Promise<boolean> {
  const { stdout } = await run("qemu-io", ["-f", "qcow2", "-c", `read -P ${byte} 0 64k`, file], { timeout: 30_000 });
  return !/verification failed/i.test(stdout);
}

/** The internal snapshot tags of a qcow2 file. */
async function tags(file: string): Promise<string[]> {
  const { stdout } = await run("qemu-img", ["info", "--output=json", "-U", "-f", "qcow2", file], { timeout: 30_000 });
  return ((JSON.parse(stdout) as { snapshots?: { name: string }[] }).snapshots ?? []).map((x) => x.name).sort();
}

describe("volume snapshots over the API", () => {
  let s: TestServer;
  let dir: string;
  let agent: TestAgent<SimulatedBackend>;
  let volumes: Client<typeof VolumeService>;
  let snapshots: Client<typeof SnapshotService>;
  /** Each node storage: its pool and where its volume files are. */
  const sites: { name: string; poolId: string; fileOf: (volumeId: string) => string }[] = [];

  const available = (id: string, what: string) =>
    until(async () => {
      const x = await snapshots.getSnapshot({ id });
      if (x.status?.state === SnapshotState.ERROR) throw new Error(`${what}: ERROR ${x.status.errorMessage}`);
      return x.status?.state === SnapshotState.AVAILABLE && x.status.observedGeneration === x.generation ? x : undefined;
    }, what);
  const volumeReady = (id: string) => until(async () => ((await volumes.getVolume({ id })).status?.state === VolumeState.AVAILABLE ? true : undefined), `volume ${id} AVAILABLE`);
  const byId = async (volumeId: string) => new Map((await snapshots.listSnapshots({ volumeId })).snapshots.map((x) => [x.id, x] as const));

  before(async () => {
    await ensureDebianPackages(["qemu-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-snapshots-"));
    s = await startTestServer({ storageDir: join(dir, "cp"), defaultQuota: {} });
    agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 20 }), join(dir, "agent"), `snapshot-agent-${process.pid}`);
    await agent.start(s.url);
    const agentNode = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY", 30_000);
    const pools = createClient(StoragePoolService, s.transport);
    volumes = createClient(VolumeService, s.transport);
    snapshots = createClient(SnapshotService, s.transport);
    const sim = await pools.createStoragePool({ name: "sim-local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1] } });
    const onAgent = await pools.createStoragePool({ name: "agent-local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [agentNode] } });
    for (const p of [sim, onAgent]) await until(async () => ((await pools.getStoragePool({ id: p.id })).status?.state === StoragePoolState.READY ? true : undefined), `pool ${p.name} READY`);
    sites.push({ name: "a demo simulated host (qemu-img in the control plane)", poolId: sim.id, fileOf: (v) => join(dir, "cp", HV1, sim.id, `${v}.qcow2`) });
    sites.push({ name: "a host agent's node (vmm.v1.StorageService)", poolId: onAgent.id, fileOf: (v) => join(agent.stateDir, "pools", onAgent.id, `${v}.qcow2`) });
  });
  after(async () => {
    await agent?.kill().catch(() => undefined);
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const i of [0, 1]) {
    it(`takes, lists as a tree, reverts, copies and deletes snapshots on ${["a demo simulated host", "a host agent's node"][i]}`, async () => {
      const site = sites[i]!;
      const v = await volumes.createVolume({ name: `disk-${i}`, spec: { sizeGib: 1n, poolId: site.poolId, format: VolumeFormat.QCOW2 } });
      await volumeReady(v.id);
      const file = site.fileOf(v.id);

      await writePattern(file, 0x11);
      const s1 = await snapshots.createSnapshot({ name: "before-upgrade", labels: { app: "db" }, spec: { target: { case: "volumeId", value: v.id } } });
      assert.equal(s1.projectId, v.projectId);
      assert.equal(s1.status?.state, SnapshotState.CREATING);
      const a1 = await available(s1.id, "s1 AVAILABLE");
      assert.equal(a1.status?.parentId, "");
      assert.equal(a1.status?.current, true);
      assert.equal(a1.status?.sourceSizeGib, 1n);
      assert.ok(a1.status?.takenAt, "taken_at from the image");
      assert.equal(a1.status?.conditions.find((c) => c.type === "Ready")?.reason, "Taken");
      assert.deepEqual(await tags(file), [s1.id], "the node tagged the snapshot with its id");

      await writePattern(file, 0x22);
      const s2 = await snapshots.createSnapshot({ name: "after-upgrade", spec: { target: { case: "volumeId", value: v.id } } });
      await available(s2.id, "s2 AVAILABLE");
      let tree = await byId(v.id);
      assert.equal(tree.get(s2.id)?.status?.parentId, s1.id, "s2 was taken after s1");
      assert.equal(tree.get(s2.id)?.status?.current, true);
      assert.equal(tree.get(s1.id)?.status?.current, false);

      await writePattern(file, 0x33);
      const reverting = await snapshots.revertToSnapshot({ id: s1.id });
      assert.equal(reverting.generation, 2n);
      const reverted = await available(s1.id, "s1 reverted");
      assert.equal(reverted.status?.conditions.find((c) => c.type === "Reverted")?.status, 1 /* TRUE */);
      assert.ok(await hasPattern(file, 0x11), "the volume holds s1's data again");
      tree = await byId(v.id);
      assert.equal(tree.get(s1.id)?.status?.current, true, "the revert made s1 current");
      assert.equal(tree.get(s2.id)?.status?.current, false);

      // A snapshot after a revert branches from the snapshot reverted to.
      const s3 = await snapshots.createSnapshot({ name: "branch", spec: { target: { case: "volumeId", value: v.id } } });
      await available(s3.id, "s3 AVAILABLE");
      tree = await byId(v.id);
      assert.equal(tree.get(s3.id)?.status?.parentId, s1.id, "s3 is s1's second child");

      // A new volume from s2 holds s2's data.
      const copy = await volumes.createVolume({ name: `from-s2-${i}`, spec: { poolId: site.poolId, source: { source: { case: "snapshotId", value: s2.id } } } });
      assert.equal(copy.spec?.sizeGib, 1n, "the snapshot's size by default");
      await volumeReady(copy.id);
      assert.ok(await hasPattern(site.fileOf(copy.id), 0x22), "the copy holds s2's data");

      // Deleting a snapshot a volume was made from is refused, and changes nothing.
      const inUse = await rejection(snapshots.deleteSnapshot({ id: s2.id }));
      assert.equal(inUse.code, Code.FailedPrecondition);
      assert.match(inUse.message, new RegExp(copy.id));
      assert.equal((await snapshots.getSnapshot({ id: s2.id })).status?.state, SnapshotState.AVAILABLE);

      // Deleting s1 re-parents s2 and s3 to s1's parent (none); the tags go from the file.
      await snapshots.deleteSnapshot({ id: s3.id });
      await snapshots.deleteSnapshot({ id: s1.id });
      assert.equal((await rejection(snapshots.getSnapshot({ id: s1.id }))).code, Code.NotFound);
      assert.equal((await byId(v.id)).get(s2.id)?.status?.parentId, "");
      assert.deepEqual(await tags(file), [s2.id]);

      // The copy goes, then s2, then the volume.
      await volumes.deleteVolume({ id: copy.id });
      await snapshots.deleteSnapshot({ id: s2.id });
      assert.deepEqual(await tags(file), []);
      await volumes.deleteVolume({ id: v.id });
    });
  }

  it("bad input is refused with field paths or the ids it names, and changes nothing", async () => {
    const site = sites[0]!;
    const v = await volumes.createVolume({ name: "bad-input", spec: { sizeGib: 1n, poolId: site.poolId } });
    await volumeReady(v.id);
    const raw = await volumes.createVolume({ name: "raw-disk", spec: { sizeGib: 1n, poolId: site.poolId, format: VolumeFormat.RAW } });
    await volumeReady(raw.id);
    const before = (await snapshots.listSnapshots({})).totalCount;

    const noName = await rejection(snapshots.createSnapshot({ name: "", spec: { target: { case: "volumeId", value: v.id } } }));
    assert.equal(noName.code, Code.InvalidArgument);
    assert.deepEqual(fields(noName), ["name"]);
    const noTarget = await rejection(snapshots.createSnapshot({ name: "x", spec: {} }));
    assert.equal(noTarget.code, Code.InvalidArgument);
    assert.deepEqual(fields(noTarget), ["spec.volume_id"]);
    const missing = "6f0c0b5e-0000-4000-8000-000000000000";
    const notFound = await rejection(snapshots.createSnapshot({ name: "x", spec: { target: { case: "volumeId", value: missing } } }));
    assert.equal(notFound.code, Code.NotFound);
    assert.match(notFound.message, new RegExp(missing));
    const rawRefused = await rejection(snapshots.createSnapshot({ name: "x", spec: { target: { case: "volumeId", value: raw.id } } }));
    assert.equal(rawRefused.code, Code.FailedPrecondition);
    assert.match(rawRefused.message, new RegExp(`${raw.id}.*RAW`));
    assert.equal((await rejection(snapshots.revertToSnapshot({ id: missing }))).code, Code.NotFound);
    assert.equal((await rejection(snapshots.deleteSnapshot({ id: missing }))).code, Code.NotFound);

    const snap = await snapshots.createSnapshot({ name: "one", spec: { target: { case: "volumeId", value: v.id } } });
    assert.equal((await rejection(snapshots.createSnapshot({ name: "one", spec: { target: { case: "volumeId", value: v.id } } }))).code, Code.AlreadyExists);
    await available(snap.id, "snapshot AVAILABLE");
    const linked = await rejection(volumes.createVolume({ name: "linked-from-snap", spec: { poolId: site.poolId, source: { source: { case: "snapshotId", value: snap.id }, linked: true } } }));
    assert.equal(linked.code, Code.InvalidArgument);
    assert.deepEqual(fields(linked), ["spec.source.linked"]);

    // A VM that names the volume holds it: reverting it is refused.
    const vms = createClient(VMService, s.transport);
    const vm = await vms.createVM({ name: "uses-the-volume", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "root", volumeId: v.id }] } });
    const busy = await rejection(snapshots.revertToSnapshot({ id: snap.id }));
    assert.equal(busy.code, Code.FailedPrecondition);
    assert.match(busy.message, new RegExp(`in use by VM '${vm.id}'`));
    const after = await snapshots.getSnapshot({ id: snap.id });
    assert.equal(after.generation, 1n, "a refused revert changes nothing");
    await vms.deleteVM({ id: vm.id, force: true }).catch(() => undefined);

    // A VM on a node whose hypervisor cannot snapshot VMs (the demo's simulated hosts): refused naming the capability; an unknown VM: NOT_FOUND.
    const plain = await vms.createVM({ name: "plain", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
    await vms.startVM({ id: plain.id });
    const noCap = await rejection(snapshots.createSnapshot({ name: "vm", spec: { target: { case: "vmId", value: plain.id }, includeMemory: true } }));
    assert.equal(noCap.code, Code.FailedPrecondition, noCap.message);
    assert.match(noCap.message, /lacks the capability "vm-snapshot"/);
    const noVm = await rejection(snapshots.createSnapshot({ name: "vm", spec: { target: { case: "vmId", value: missing } } }));
    assert.equal(noVm.code, Code.NotFound);
    assert.match(noVm.message, new RegExp(missing));
    await vms.deleteVM({ id: plain.id, force: true }).catch(() => undefined);

    const renamed = await snapshots.updateSnapshot({ id: snap.id, name: "renamed", updateMask: { paths: ["name"] } });
    assert.equal(renamed.name, "renamed");
    const badName = await rejection(snapshots.updateSnapshot({ id: snap.id, name: "1bad", updateMask: { paths: ["name"] } }));
    assert.deepEqual(fields(badName), ["name"]);
    assert.equal((await snapshots.listSnapshots({})).totalCount, before + 1, "only the one good snapshot was made");

    // A deleted volume takes its snapshots with it.
    await volumes.deleteVolume({ id: v.id });
    await until(async () => ((await rejection(snapshots.getSnapshot({ id: snap.id }))).code === Code.NotFound ? true : undefined), "the volume's snapshot gone with it");
    await volumes.deleteVolume({ id: raw.id });
  });

  it("a revert the node refuses (the volume backs a linked clone) leaves the snapshot AVAILABLE with Reverted=False and the node's reason", async () => {
    const site = sites[1]!;
    const v = await volumes.createVolume({ name: "backing", spec: { sizeGib: 1n, poolId: site.poolId } });
    await volumeReady(v.id);
    const snap = await snapshots.createSnapshot({ name: "s", spec: { target: { case: "volumeId", value: v.id } } });
    await available(snap.id, "snapshot AVAILABLE");
    const clone = await volumes.cloneVolume({ id: v.id, name: "overlay", linked: true });
    await volumeReady(clone.id);
    await snapshots.revertToSnapshot({ id: snap.id });
    const after = await until(async () => {
      const x = await snapshots.getSnapshot({ id: snap.id });
      return x.status?.observedGeneration === x.generation ? x : undefined;
    }, "the revert answered");
    assert.equal(after.status?.state, SnapshotState.AVAILABLE, "the snapshot itself is fine");
    const c = after.status?.conditions.find((x) => x.type === "Reverted");
    assert.equal(c?.status, 2 /* FALSE */);
    assert.equal(c?.reason, "RevertFailedPrecondition");
    assert.match(after.status?.errorMessage ?? "", /linked clone/);
    await volumes.deleteVolume({ id: clone.id });
    await volumes.deleteVolume({ id: v.id });
  });

  it("WatchSnapshots follows a snapshot from CREATING to AVAILABLE", async () => {
    const site = sites[0]!;
    const v = await volumes.createVolume({ name: "watched", spec: { sizeGib: 1n, poolId: site.poolId } });
    await volumeReady(v.id);
    const ac = new AbortController();
    const seen: { type: EventType; state: SnapshotState | undefined }[] = [];
    const watching = (async () => {
      try {
        for await (const u of snapshots.watchSnapshots({ volumeId: v.id }, { signal: ac.signal })) {
          seen.push({ type: u.type, state: (u.snapshot as Snapshot | undefined)?.status?.state });
          if (u.snapshot?.status?.state === SnapshotState.AVAILABLE) return;
        }
      } catch (err) {
        if (!ac.signal.aborted) throw err;
      }
    })();
    await until(async () => (seen.some((x) => x.type === EventType.SYNCED) ? true : undefined), "watch SYNCED");
    await snapshots.createSnapshot({ name: "w", spec: { target: { case: "volumeId", value: v.id } } });
    await Promise.race([watching, until(async () => undefined, "watch sees AVAILABLE", 20_000)]);
    ac.abort();
    assert.ok(seen.some((x) => x.type === EventType.ADDED && x.state === SnapshotState.CREATING), JSON.stringify(seen));
    assert.ok(seen.some((x) => x.state === SnapshotState.AVAILABLE));
    await volumes.deleteVolume({ id: v.id });
  });
});
