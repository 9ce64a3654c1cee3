import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { MigrationStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { DiskDeviceSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolSchema, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeSchema, VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { MIGRATION_KIND, QuantixError, SNAPSHOT_KIND, STORAGE_POOL_KIND, VM_KIND, VOLUME_KIND } from "@quantix/core";
import { SnapshotSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { until } from "@quantix/testing";
import { fakeCluster, FakeNode } from "../services/migration-test-kit.js";
import type { NodePool, NodeStorage, NodeVolume, NodeVolumeFormat } from "./node-storage.js";
import type { NodeStorages } from "./node-storages.js";

/*
 * Live migration of VMs whose disks are volumes, on fake nodes with in-memory node storage
 * (each node its own pool directory, as each agent has its own pool root): where the
 * target's files are, what moves after a successful migration, what does not after a
 * failed one, which targets the volumes allow, and the refusals.
 */

/** A node's storage as a map of files: DIR pools under `/n/<node>/pools/<pool>`, SHARED_DIR pools at their path. */
class MemNodeStorage {
  readonly kind = "memory";
  readonly files = new Map<string, { format: NodeVolumeFormat; backing: string }>();
  readonly deleted: string[] = [];
  private readonly dirs = new Map<string, string>();
  constructor(readonly nodeId: string, private readonly shared: Map<string, { format: NodeVolumeFormat; backing: string }>) {}
  async ensurePool(req: { poolId: string; type: string; path?: string }): Promise<NodePool> {
    const path = req.type === "DIR" ? `/n/${this.nodeId}/pools/${req.poolId}` : req.path!;
    this.dirs.set(req.poolId, path);
    return { poolId: req.poolId, capacityBytes: 1n << 40n, availableBytes: 1n << 40n, usedBytes: 0n, provisionedBytes: 0n, volumeCount: 0, path };
  }
  private store(poolId: string) {
    return this.dirs.get(poolId)!.startsWith("/n/") ? this.files : this.shared;
  }
  put(poolId: string, volumeId: string, format: NodeVolumeFormat = "qcow2", backing = ""): void {
    this.store(poolId).set(`${poolId}/${volumeId}`, { format, backing });
  }
  async volumeInfo(req: { poolId: string; volumeId: string }): Promise<NodeVolume | undefined> {
    const f = this.store(req.poolId).get(`${req.poolId}/${req.volumeId}`);
    return f ? { volumeId: req.volumeId, format: f.format, virtualSizeBytes: 1n << 30n, actualSizeBytes: 0n, backingVolumeId: f.backing, path: `${this.dirs.get(req.poolId)}/${req.volumeId}.${f.format}` } : undefined;
  }
  async deleteVolume(req: { poolId: string; volumeId: string }): Promise<void> {
    if (!this.store(req.poolId).delete(`${req.poolId}/${req.volumeId}`)) throw new QuantixError("not_found", `volume '${req.volumeId}' not found`);
    this.deleted.push(req.volumeId);
  }
}

const VOL = "0b7c5e4a-1111-4c2e-9d0e-000000000001";

async function cluster(nodes: Record<string, number>, pool: { type: StoragePoolType; nodeIds?: string[] }, volume: { linked?: boolean } = {}) {
  const shared = new Map<string, { format: NodeVolumeFormat; backing: string }>();
  const mem = new Map<string, MemNodeStorage>(Object.keys(nodes).map((id) => [id, new MemNodeStorage(id, shared)]));
  const storages = { of: (n: Node) => mem.get(n.id) as unknown as NodeStorage } as unknown as NodeStorages;
  const c = await fakeCluster(nodes, { storages });
  const local = pool.type === StoragePoolType.LOCAL_DIR;
  await c.store.of(STORAGE_POOL_KIND).create(
    create(StoragePoolSchema, { id: "pool-1", name: "pool-1", spec: { type: pool.type, nodeIds: pool.nodeIds ?? [], ...(local ? {} : { backend: { case: "sharedDir", value: { path: "/shared/p1" } } }) }, generation: 1n }),
  );
  await c.store.of(VOLUME_KIND).create(
    create(VolumeSchema, {
      id: VOL,
      projectId: "default",
      name: "root",
      spec: { sizeGib: 1n, poolId: "pool-1", ...(volume.linked ? { source: { source: { case: "volumeId" as const, value: "base-vol" }, linked: true } } : {}) },
      status: { state: VolumeState.IN_USE, nodeId: local ? "a" : "", attachments: [{ vmId: "vm-1", diskId: "root", nodeId: "a" }] },
      generation: 1n,
    }),
  );
  await mem.get("a")!.ensurePool({ poolId: "pool-1", type: local ? "DIR" : "SHARED_DIR", path: "/shared/p1" });
  mem.get("a")!.put("pool-1", VOL, "qcow2", volume.linked ? "base-vol" : "");
  const vm = await c.runningVm("vm-1", "a");
  await c.store.of(VM_KIND).update("vm-1", (cur) => {
    cur.spec!.disks = [create(DiskDeviceSchema, { id: "root", volumeId: VOL })];
    return cur;
  });
  // The fake source "copies" a local volume's file to the target as the agents' copy_storage does.
  for (const [id, n] of Object.entries(Object.fromEntries(Object.keys(nodes).map((k) => [k, c.node(k)])))) {
    n.behaviour = async ({ vmId, source, target }) => {
      if (local) mem.get(target.id)!.files.set(`pool-1/${VOL}`, { format: "qcow2", backing: "" });
      void id;
      return FakeNode.move(vmId, source, target);
    };
  }
  return { c, mem, vm };
}

const never = () => new AbortController().signal;
const req = (vmId: string, targetNodeId = "") => ({ vmId, targetNodeId, live: true, maxDowntimeMs: 0, bandwidthMbps: 0 });
const volume = async (c: Awaited<ReturnType<typeof fakeCluster>>) => (await c.store.of(VOLUME_KIND).get(VOL))!;
const failed = (code: string, re: RegExp) => (err: unknown) => err instanceof QuantixError && err.code === code && re.test(err.message);

test("a VM on a LOCAL_DIR volume migrates: the copy goes to the target's pool directory, then the volume moves there and the source's file is removed", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.LOCAL_DIR });
  try {
    const done = await c.migration.migrate(req("vm-1", "b"), never());
    assert.equal(done.vm.status?.nodeId, "b");
    assert.equal(c.node("b").preparedVolumePaths.get("vm-1")?.get(VOL), `/n/b/pools/pool-1/${VOL}.qcow2`, "the target's config names the target's own pool file");
    const v = await volume(c);
    assert.equal(v.status?.nodeId, "b", "the volume record moved to the target");
    assert.equal(v.status?.flattened, false, "a volume that was not a linked clone is never flattened");
    assert.deepEqual(mem.get("a")!.deleted, [VOL], "the source's file was removed through the source's storage");
    assert.equal(await mem.get("a")!.volumeInfo({ poolId: "pool-1", volumeId: VOL }), undefined);
    assert.ok(await mem.get("b")!.volumeInfo({ poolId: "pool-1", volumeId: VOL }), "the target holds the volume");
  } finally {
    await c.close();
  }
});

test("a VM on a SHARED_DIR volume migrates in place: the target's config uses the target's own path, nothing is copied or moved", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.SHARED_DIR });
  try {
    const done = await c.migration.migrate(req("vm-1", "b"), never());
    assert.equal(done.vm.status?.nodeId, "b");
    assert.equal(c.node("b").preparedVolumePaths.get("vm-1")?.get(VOL), `/shared/p1/${VOL}.qcow2`);
    assert.equal((await volume(c)).status?.nodeId, "", "a shared volume has no node");
    assert.deepEqual(mem.get("a")!.deleted, []);
    assert.ok(await mem.get("b")!.volumeInfo({ poolId: "pool-1", volumeId: VOL }));
  } finally {
    await c.close();
  }
});

test("a failed migration of a local volume moves nothing and removes the target's partial copy (with its VM)", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.LOCAL_DIR });
  try {
    c.node("a").behaviour = async () => {
      throw new QuantixError("aborted", "copying disk disk0 to the target failed: Input/output error");
    };
    await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), failed("aborted", /Input\/output error/));
    assert.equal((await volume(c)).status?.nodeId, "a", "the volume stays on the source");
    assert.deepEqual(mem.get("a")!.deleted, []);
    assert.ok(await mem.get("a")!.volumeInfo({ poolId: "pool-1", volumeId: VOL }), "the source keeps its file");
    assert.equal(c.node("b").vms.has("vm-1"), false, "the target's VM (and with it its incoming copy) was deleted");
    assert.equal(c.node("a").vms.get("vm-1"), "running");
  } finally {
    await c.close();
  }
});

test("the target must reach the volume's pool: the scheduler picks only the pool's nodes, and a named target outside it is refused", async () => {
  for (const type of [StoragePoolType.LOCAL_DIR, StoragePoolType.SHARED_DIR]) {
    const { c } = await cluster({ a: 8192, b: 16384, c: 4096 }, { type, nodeIds: ["a", "c"] });
    try {
      await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), failed("failed_precondition", /cannot migrate to node 'host-b'.*does not hold the VM's volumes/));
      assert.equal((await c.store.of(MIGRATION_KIND).list({ order: { field: "created_at", desc: true }, limit: 10, countTotal: false })).items.length, 0, "nothing was started");
      const done = await c.migration.migrate(req("vm-1"), never());
      assert.equal(done.vm.status?.nodeId, "c", `${StoragePoolType[type]}: the only other node with the pool`);
    } finally {
      await c.close();
    }
  }
});

test("a linked clone on a local pool migrates like any local volume and arrives flattened: its record says so, and it no longer holds its base", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.LOCAL_DIR }, { linked: true });
  try {
    const done = await c.migration.migrate(req("vm-1", "b"), never());
    assert.equal(done.vm.status?.nodeId, "b");
    const v = await volume(c);
    assert.equal(v.status?.nodeId, "b");
    assert.equal(v.status?.flattened, true);
    assert.ok(await mem.get("b")!.volumeInfo({ poolId: "pool-1", volumeId: VOL }), "the target holds the copy");
    assert.deepEqual(mem.get("a")!.deleted, [VOL], "the source's overlay was removed");
  } finally {
    await c.close();
  }
});

test("a local volume with snapshots is refused up front (they live inside the file a copy does not carry); nothing changes", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.LOCAL_DIR });
  try {
    await c.store.of(SNAPSHOT_KIND).create(create(SnapshotSchema, { id: "0b7c5e4a-2222-4c2e-9d0e-000000000001", projectId: "default", name: "before-upgrade", generation: 1n, spec: { target: { case: "volumeId", value: VOL } } }));
    await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), failed("failed_precondition", /snapshot '0b7c5e4a-2222-4c2e-9d0e-000000000001' \(before-upgrade\) is kept inside the volume's file.*delete the snapshots first, or use a shared pool/));
    assert.equal((await volume(c)).status?.nodeId, "a");
    assert.equal(c.node("b").vms.size, 0);
    assert.ok(await mem.get("a")!.volumeInfo({ poolId: "pool-1", volumeId: VOL }));
  } finally {
    await c.close();
  }
});

test("a stale copy of the volume on the target fails the migration before anything is prepared; the run records the reason", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.LOCAL_DIR });
  try {
    await mem.get("b")!.ensurePool({ poolId: "pool-1", type: "DIR" });
    mem.get("b")!.put("pool-1", VOL);
    await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), failed("failed_precondition", /already has a file there/));
    const m = (await c.store.of(MIGRATION_KIND).list({ order: { field: "created_at", desc: true }, limit: 1, countTotal: false })).items[0]!;
    assert.equal(m.status?.phase, MigrationStatus_Phase.FAILED);
    assert.equal(c.node("b").vms.has("vm-1"), false);
    assert.equal((await volume(c)).status?.nodeId, "a");
    assert.equal(c.node("a").vms.get("vm-1"), "running");
  } finally {
    await c.close();
  }
});

test("a local-volume migration that completed while the control plane restarted: resolved as completed, the volume moves to the target and the source's file goes", async () => {
  const { c, mem } = await cluster({ a: 8192, b: 8192 }, { type: StoragePoolType.LOCAL_DIR });
  try {
    // The first attempt completes on the nodes (guest and copy on B) but its stream never ends, until the caller goes away.
    c.node("a").behaviour = ({ vmId, source, target, signal }) => {
      mem.get("b")!.files.set(`pool-1/${VOL}`, { format: "qcow2", backing: "" });
      FakeNode.move(vmId, source, target);
      return new Promise((_, reject) => signal.addEventListener("abort", () => reject(new QuantixError("aborted", "the caller went away")), { once: true }));
    };
    const moving = c.migration.migrate(req("vm-1", "b"), never()).catch((e: unknown) => e);
    await until(async () => (c.node("b").vms.get("vm-1") === "running" ? true : undefined), "the guest on B");
    await c.restart();
    const done = await moving;
    assert.ok(!(done instanceof Error), String(done));
    await until(async () => ((await volume(c)).status?.nodeId === "b" ? true : undefined), "the volume moved to B");
    assert.deepEqual(mem.get("a")!.deleted, [VOL]);
    const m = (await c.store.of(MIGRATION_KIND).list({ order: { field: "created_at", desc: true }, limit: 1, countTotal: false })).items[0]!;
    assert.equal(m.status?.phase, MigrationStatus_Phase.SUCCEEDED);
  } finally {
    await c.close();
  }
});
