import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { StoragePoolSchema, StoragePoolState, StoragePoolType, VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { GetStoragePoolRequestSchema, StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { QuotaService } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { DEFAULT_PROJECT_ID } from "@quantix/core";
import { collect, ensureDebianPackages, grpcJsUnary, rejection, startTestServer, transports, until, type TestServer } from "@quantix/testing";

// Pools and volumes through the real API, on the demo's simulated hosts, whose storage
// is real qemu-img files under a temporary directory: create a pool, a volume that
// becomes AVAILABLE with its measured size, grow it, clone it, delete it; quotas hold
// under concurrent creates; bad input changes nothing.

const GIB = 1n << 30n;
const HV1 = "00000000-0000-0000-0001-000000000001";

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

describe("storage pools and volumes over the API", () => {
  let s: TestServer;
  let dir: string;
  let pools: Client<typeof StoragePoolService>;
  let volumes: Client<typeof VolumeService>;
  let poolId: string;

  before(async () => {
    await ensureDebianPackages(["qemu-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-scp-"));
    s = await startTestServer({ storageDir: dir, defaultQuota: {} });
    pools = createClient(StoragePoolService, s.transport);
    volumes = createClient(VolumeService, s.transport);
    const pool = await pools.createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1], isDefault: true } });
    poolId = pool.id;
  });
  after(async () => {
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("sets a directory pool up on its node and reports it READY with measured capacity", async () => {
    const pool = await until(async () => {
      const p = await pools.getStoragePool({ id: poolId });
      return p.status?.state === StoragePoolState.READY ? p : undefined;
    }, "pool READY");
    assert.ok(pool.status!.capacityBytes > 0n);
    assert.equal(pool.status!.nodes.length, 1);
    assert.equal(pool.status!.nodes[0]!.available, true);
    assert.ok((await readdir(join(dir, HV1, poolId))).includes(".quantix-pool"));
  });

  it("creates a volume that becomes AVAILABLE with the size qemu-img measures, grows it, and deletes it", async () => {
    const v = await volumes.createVolume({ name: "data-1", spec: { sizeGib: 2n, format: VolumeFormat.QCOW2 } });
    assert.equal(v.projectId, DEFAULT_PROJECT_ID);
    assert.equal(v.spec?.poolId, poolId);
    assert.equal(v.status?.state, VolumeState.PENDING);
    const ready = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.state === VolumeState.AVAILABLE ? x : undefined;
    }, "volume AVAILABLE");
    assert.equal(ready.status?.virtualSizeBytes, 2n * GIB);
    assert.ok(ready.status!.usedBytes > 0n && ready.status!.usedBytes < GIB, "a thin qcow2 uses little");
    assert.equal(ready.status?.nodeId, HV1);
    assert.equal(ready.status?.conditions.find((c) => c.type === "Ready")?.reason, "Available");
    const file = join(dir, HV1, poolId, `${v.id}.qcow2`);
    assert.ok((await stat(file)).isFile());

    const grown = await volumes.resizeVolume({ id: v.id, newSizeGib: 3n });
    assert.equal(grown.spec?.sizeGib, 3n);
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.virtualSizeBytes === 3n * GIB ? true : undefined), "grown to 3 GiB");
    const shrink = await rejection(volumes.resizeVolume({ id: v.id, newSizeGib: 1n }));
    assert.equal(shrink.code, Code.InvalidArgument);
    assert.deepEqual(fields(shrink), ["new_size_gib"]);

    await volumes.deleteVolume({ id: v.id });
    assert.equal((await rejection(volumes.getVolume({ id: v.id }))).code, Code.NotFound);
    await assert.rejects(stat(file));
  });

  it("clones a volume linked, refuses to delete the source while the clone exists, and deletes it with force", async () => {
    const base = await volumes.createVolume({ name: "base", spec: { sizeGib: 1n } });
    await until(async () => ((await volumes.getVolume({ id: base.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "base AVAILABLE");
    const clone = await volumes.cloneVolume({ id: base.id, name: "base-clone", linked: true });
    assert.equal(clone.spec?.source?.linked, true);
    await until(async () => ((await volumes.getVolume({ id: clone.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "clone AVAILABLE");
    const refused = await rejection(volumes.deleteVolume({ id: base.id }));
    assert.equal(refused.code, Code.FailedPrecondition);
    assert.match(refused.rawMessage, new RegExp(`backs volume '${clone.id}'`));
    assert.equal((await volumes.getVolume({ id: base.id })).status?.state, VolumeState.AVAILABLE, "a refused delete changes nothing");
    await volumes.deleteVolume({ id: base.id, force: true });
    assert.equal((await rejection(volumes.getVolume({ id: base.id }))).code, Code.NotFound);
    await volumes.deleteVolume({ id: clone.id });
    assert.deepEqual((await readdir(join(dir, HV1, poolId))).filter((f) => f !== ".quantix-pool"), []);
  });

  it("refuses bad input with field paths and changes nothing", async () => {
    const before = (await volumes.listVolumes({})).totalCount;
    const cases: [Promise<unknown>, Code, string[]][] = [
      [volumes.createVolume({ name: "", spec: { sizeGib: 0n } }), Code.InvalidArgument, ["name", "spec.size_gib"]],
      [volumes.createVolume({ name: "big", spec: { sizeGib: 65_537n } }), Code.InvalidArgument, ["spec.size_gib"]],
      [volumes.createVolume({ name: "bad id", spec: { sizeGib: 1n } }), Code.InvalidArgument, ["name"]],
      [volumes.createVolume({ name: "x", spec: { sizeGib: 1n, poolId: "../etc" } }), Code.InvalidArgument, ["spec.pool_id"]],
      [volumes.createVolume({ name: "x", spec: { sizeGib: 1n, format: 9 as VolumeFormat } }), Code.InvalidArgument, ["spec.format"]],
      [volumes.getVolume({ id: "no/such" }), Code.InvalidArgument, ["id"]],
    ];
    for (const [p, code, f] of cases) {
      const e = await rejection(p);
      assert.equal(e.code, code, e.message);
      assert.deepEqual(fields(e), f);
    }
    // The pool's measured room (its file system here) is far below 60 TiB.
    const full = await rejection(volumes.createVolume({ name: "too-big", spec: { sizeGib: 60_000n } }));
    assert.equal(full.code, Code.ResourceExhausted);
    assert.match(full.rawMessage, new RegExp(`storage pool '${poolId}' has room for`));
    const unknownPool = await rejection(volumes.createVolume({ name: "x", spec: { sizeGib: 1n, poolId: "7b0c9f5e-0000-4000-8000-000000000000" } }));
    assert.equal(unknownPool.code, Code.NotFound);
    assert.match(unknownPool.rawMessage, /storage pool '7b0c9f5e-0000-4000-8000-000000000000' not found/);
    const unknownProject = await rejection(volumes.createVolume({ name: "x", projectId: "nope", spec: { sizeGib: 1n } }));
    assert.equal(unknownProject.code, Code.NotFound);
    const missing = await rejection(volumes.deleteVolume({ id: "7b0c9f5e-0000-4000-8000-000000000001" }));
    assert.equal(missing.code, Code.NotFound);
    assert.equal((await volumes.listVolumes({})).totalCount, before);

    const nfs = await rejection(pools.createStoragePool({ name: "nfs", spec: { type: StoragePoolType.NFS, backend: { case: "nfs", value: { server: "nfs.example", exportPath: "/vms" } } } }));
    assert.equal(nfs.code, Code.FailedPrecondition);
    assert.match(nfs.rawMessage, /no node reports the capability 'storage-pool-nfs'/);
    const mismatch = await rejection(pools.createStoragePool({ name: "odd", spec: { type: StoragePoolType.SHARED_DIR, backend: { case: "localDir", value: {} } } }));
    assert.equal(mismatch.code, Code.InvalidArgument);
    assert.deepEqual(fields(mismatch), ["spec.local_dir"]);
    const path = await rejection(pools.createStoragePool({ name: "odd", spec: { type: StoragePoolType.SHARED_DIR, backend: { case: "sharedDir", value: { path: "/srv/../etc" } } } }));
    assert.deepEqual(fields(path), ["spec.shared_dir.path"]);
    assert.equal((await pools.listStoragePools({})).storagePools.length, 1);
  });

  it("refuses to delete a volume a VM names as a disk, naming the VM, until the VM is gone", async () => {
    const v = await volumes.createVolume({ name: "vm-disk", spec: { sizeGib: 1n } });
    // A VM's disk needs its volume AVAILABLE (vm-volumes.test.ts has the rules).
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "volume AVAILABLE");
    const vm = await s.vms.createVM({ name: "uses-volume", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "data", volumeId: v.id }] } });
    const e = await rejection(volumes.deleteVolume({ id: v.id }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.rawMessage, new RegExp(`in use by VM '${vm.id}'`));
    assert.ok(await volumes.getVolume({ id: v.id }), "a refused delete changes nothing");
    await s.vms.deleteVM({ id: vm.id });
    await volumes.deleteVolume({ id: v.id });
  });

  it("refuses to delete a pool that holds volumes, naming how many", async () => {
    const v = await volumes.createVolume({ name: "keeps-pool", spec: { sizeGib: 1n } });
    const e = await rejection(pools.deleteStoragePool({ id: poolId }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.rawMessage, /holds 1 volume/);
    await volumes.deleteVolume({ id: v.id });
  });

  it("holds the `volumes` quota under concurrent creates, and releases it on delete", async () => {
    const projects = createClient(ProjectService, s.transport);
    const quotas = createClient(QuotaService, s.transport);
    const project = await projects.createProject({ name: "quota-race" });
    await quotas.setQuota({ projectId: project.id, limits: { volumes: 5n, volumeGib: 100n } });
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => volumes.createVolume({ name: `r${i}`, projectId: project.id, spec: { sizeGib: 1n } })));
    const ok = results.filter((r) => r.status === "fulfilled");
    assert.equal(ok.length, 5);
    for (const r of results) if (r.status === "rejected") assert.equal((r.reason as ConnectError).code, Code.ResourceExhausted);
    const q = await quotas.getQuota({ projectId: project.id });
    assert.equal(q.used?.volumes, 5n);
    assert.equal(q.used?.volumeGib, 5n);
    const tooBig = await rejection(volumes.createVolume({ name: "huge", projectId: project.id, spec: { sizeGib: 200n } }));
    assert.equal(tooBig.code, Code.ResourceExhausted);
    for (const r of ok) await volumes.deleteVolume({ id: (r as PromiseFulfilledResult<{ id: string }>).value.id });
    const after = await quotas.getQuota({ projectId: project.id });
    assert.equal(after.used?.volumes, 0n);
    assert.equal(after.used?.volumeGib, 0n);
  });

  it("streams a volume's phases to a watcher: PENDING, CREATING, AVAILABLE", async () => {
    const abort = new AbortController();
    const stream = volumes.watchVolumes({ poolId }, { signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value?.type, EventType.SYNCED);
    const v = await volumes.createVolume({ name: "watched", spec: { sizeGib: 1n, format: VolumeFormat.RAW } });
    const seen = await collect({ [Symbol.asyncIterator]: () => it }, (items) => items.some((u) => u.volume?.id === v.id && u.volume.status?.state === VolumeState.AVAILABLE));
    const states = seen.filter((u) => u.volume?.id === v.id).map((u) => VolumeState[u.volume!.status!.state]);
    assert.deepEqual([...new Set(states)], ["PENDING", "CREATING", "AVAILABLE"]);
    abort.abort();
    assert.ok((await stat(join(dir, HV1, poolId, `${v.id}.raw`))).isFile());
    await volumes.deleteVolume({ id: v.id });
  });

  it("on a node whose host agent is unreachable, says so in the pool's status and the waiting volume's", async () => {
    const node = await s.nodes.registerNode({ hostname: "kvm-storage-agent", managementIp: "192.0.2.20", cpuInfo: { logicalCpus: 4 }, memoryInfo: { totalMib: 8192n }, hypervisor: { type: "qemu" }, agentEndpoint: "http://192.0.2.20:9090" });
    const pool = await pools.createStoragePool({ name: "on-agent", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [node.id] } });
    const seen = await until(async () => {
      const p = await pools.getStoragePool({ id: pool.id });
      return p.status?.state === StoragePoolState.UNAVAILABLE ? p : undefined;
    }, "pool UNAVAILABLE");
    assert.match(seen.status!.nodes[0]!.message, /node 'kvm-storage-agent' is unreachable/);
    assert.equal(seen.status!.conditions.find((c) => c.type === "Ready")?.reason, "NoNodeAvailable");
    const v = await volumes.createVolume({ name: "on-agent", spec: { sizeGib: 1n, poolId: pool.id } });
    // No node could start making it: it stays PENDING, with the reason.
    const failed = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.errorMessage ? x : undefined;
    }, "volume with a reason");
    assert.equal(failed.status?.state, VolumeState.PENDING);
    const ready = failed.status!.conditions.find((c) => c.type === "Ready")!;
    assert.equal(ready.reason, "ScheduleUnavailable");
    assert.match(failed.status!.errorMessage, /node 'kvm-storage-agent' is unreachable/);
    // Nothing was made on a node: the delete has nothing to wait for.
    await volumes.deleteVolume({ id: v.id });
    // The agent cannot be asked to remove it yet: the pool waits, DELETING, with the reason.
    await pools.deleteStoragePool({ id: pool.id }, { timeoutMs: 1500 }).catch(() => undefined);
    const deleting = await until(async () => {
      const p = await pools.getStoragePool({ id: pool.id });
      return p.status?.state === StoragePoolState.DELETING && p.status.errorMessage !== "" ? p : undefined;
    }, "pool DELETING with the reason");
    assert.equal(deleting.status!.conditions.find((c) => c.type === "Ready")?.reason, "RemoveFailed");
    assert.match(deleting.status!.errorMessage, /node 'kvm-storage-agent' is unreachable/);
    const refused = await rejection(volumes.createVolume({ name: "late", spec: { sizeGib: 1n, poolId: pool.id } }));
    assert.equal(refused.code, Code.FailedPrecondition);
    assert.match(refused.rawMessage, /is being deleted/);
  });

  it("deletes a pool from its node (directory and marker) once it holds no volume", async () => {
    const pool = await pools.createStoragePool({ name: "short-lived", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1] } });
    await until(async () => ((await pools.getStoragePool({ id: pool.id })).status?.state === StoragePoolState.READY ? true : undefined), "pool READY");
    assert.ok((await readdir(join(dir, HV1))).includes(pool.id));
    await pools.deleteStoragePool({ id: pool.id });
    assert.equal((await rejection(pools.getStoragePool({ id: pool.id }))).code, Code.NotFound);
    assert.ok(!(await readdir(join(dir, HV1))).includes(pool.id));
  });

  it("accepts a pool type a node reports as a capability, and says why the pool is not usable yet", async () => {
    const node = await s.nodes.registerNode({ hostname: "kvm-nfs", managementIp: "192.0.2.21", cpuInfo: { logicalCpus: 4 }, memoryInfo: { totalMib: 8192n }, hypervisor: { type: "qemu", capabilities: ["storage-pool-nfs"] }, agentEndpoint: "http://192.0.2.21:9090" });
    const pool = await pools.createStoragePool({ name: "nfs-ok", spec: { type: StoragePoolType.NFS, nodeIds: [node.id], backend: { case: "nfs", value: { server: "nfs.example", exportPath: "/vms" } } } });
    const seen = await until(async () => {
      const p = await pools.getStoragePool({ id: pool.id });
      return p.status?.state === StoragePoolState.UNAVAILABLE ? p : undefined;
    }, "pool UNAVAILABLE");
    assert.match(seen.status!.errorMessage, /drives LOCAL_DIR and SHARED_DIR pools only/);
    const refused = await rejection(volumes.createVolume({ name: "on-nfs", spec: { sizeGib: 1n, poolId: pool.id } }));
    assert.equal(refused.code, Code.FailedPrecondition);
    assert.match(refused.rawMessage, /of type NFS, whose volumes the control plane cannot create yet/);
  });

  it("answers on gRPC (@grpc/grpc-js) and gRPC-Web too", async () => {
    const got = await grpcJsUnary(new URL(s.url).host, grpc.credentials.createInsecure(), "/Quantixkvm.storage.v1.StoragePoolService/GetStoragePool", GetStoragePoolRequestSchema, StoragePoolSchema, { id: poolId });
    assert.equal(got.name, "local");
    const web = createClient(VolumeService, transports(s.url)["grpc-web-h1"]!);
    const list = await web.listVolumes({ poolId });
    assert.ok(list.resourceVersion > 0n);
  });
});
