import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as VmState } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages, rejection, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";

// Pools and volumes on a node that runs a real host agent: the control plane drives the
// agent's vmm.v1.StorageService over the node's agent connection, and the files appear in
// the agent's pool directory (real qemu-img). The agent registers the pool types it serves
// as node capabilities.

const GIB = 1n << 30n;

describe("storage on a host agent's node", () => {
  let s: TestServer;
  let dir: string;
  let agent: TestAgent<SimulatedBackend>;
  let nodeId: string;
  let pools: Client<typeof StoragePoolService>;
  let volumes: Client<typeof VolumeService>;
  let poolId: string;

  before(async () => {
    await ensureDebianPackages(["qemu-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-agent-storage-"));
    s = await startTestServer({ demo: false, defaultQuota: {} });
    agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 20 }), join(dir, "agent"), `storage-agent-${process.pid}`);
    await agent.start(s.url);
    nodeId = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY", 30_000);
    pools = createClient(StoragePoolService, s.transport);
    volumes = createClient(VolumeService, s.transport);
  });
  after(async () => {
    await agent?.kill().catch(() => undefined);
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("registers the pool types the agent serves as node capabilities, and not the ones it only probes", async () => {
    const node = await s.nodes.getNode({ id: nodeId });
    const caps = node.status?.hypervisor?.capabilities ?? [];
    assert.ok(caps.includes("storage-pool-local-dir"), caps.join(","));
    assert.ok(!caps.includes("storage-pool-shared-dir"), "no VMCP_SHARED_DIRS on this agent");
    assert.ok(!caps.some((c) => /storage-pool-(nfs|ceph-rbd|lvm|iscsi)/.test(c)), "probed-only types are not promised");
  });

  it("sets a directory pool up in the agent's pool root, READY with the capacity the agent measured", async () => {
    poolId = (await pools.createStoragePool({ name: "agent-local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeId], isDefault: true } })).id;
    const pool = await until(async () => {
      const p = await pools.getStoragePool({ id: poolId });
      return p.status?.state === StoragePoolState.READY ? p : undefined;
    }, "pool READY on the agent");
    assert.ok(pool.status!.capacityBytes > 0n);
    assert.equal(pool.status!.nodes[0]?.nodeId, nodeId);
    assert.ok((await readdir(join(agent.stateDir, "pools", poolId))).includes(".quantix-pool"), "the agent wrote its pool marker");
  });

  it("creates, clones, grows and deletes volumes as files in the agent's pool", async () => {
    const v = await volumes.createVolume({ name: "agent-disk", spec: { sizeGib: 1n, poolId } });
    const ready = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.state === VolumeState.AVAILABLE ? x : undefined;
    }, "volume AVAILABLE on the agent");
    assert.equal(ready.status?.nodeId, nodeId);
    assert.equal(ready.status?.virtualSizeBytes, GIB);
    const file = join(agent.stateDir, "pools", poolId, `${v.id}.qcow2`);
    assert.ok((await stat(file)).isFile(), "the agent made the file");

    const clone = await volumes.cloneVolume({ id: v.id, name: "agent-clone", linked: true });
    await until(async () => ((await volumes.getVolume({ id: clone.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "linked clone AVAILABLE");
    const refused = await rejection(volumes.deleteVolume({ id: v.id }));
    assert.equal(refused.code, Code.FailedPrecondition);

    await volumes.resizeVolume({ id: clone.id, newSizeGib: 2n });
    await until(async () => ((await volumes.getVolume({ id: clone.id })).status?.virtualSizeBytes === 2n * GIB ? true : undefined), "clone grown to 2 GiB by the agent");

    await volumes.deleteVolume({ id: clone.id });
    // The clone goes when the agent has removed its file (the volume's finalizer); until then its source is still in use.
    await until(() => volumes.getVolume({ id: clone.id }).then(() => undefined, (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined)), "the clone gone", 30_000);
    await volumes.deleteVolume({ id: v.id });
    await until(async () => ((await readdir(join(agent.stateDir, "pools", poolId))).filter((f) => f !== ".quantix-pool").length === 0 ? true : undefined), "the agent removed both files");
  });

  it("a volume above the pool's measured free space is refused at once with RESOURCE_EXHAUSTED, and the agent makes nothing", async () => {
    const e = await rejection(volumes.createVolume({ name: "too-big", spec: { sizeGib: 60_000n, poolId } }));
    assert.equal(e.code, Code.ResourceExhausted, e.message);
    assert.deepEqual((await readdir(join(agent.stateDir, "pools", poolId))).filter((f) => f !== ".quantix-pool"), []);
  });

  it("a VM whose disk is a volume runs on the agent with the volume's file as its disk; a running VM's disks need disk-hotplug, which the simulated backend lacks", async () => {
    const v = await volumes.createVolume({ name: "vm-disk", spec: { sizeGib: 1n, poolId } });
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "volume AVAILABLE");
    const vm = await s.vms.createVM({ name: "agent-vm", startOnCreate: true, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "data", volumeId: v.id }] } });
    await until(async () => ((await s.vms.getVM({ id: vm.id })).status?.state === VmState.RUNNING ? true : undefined), "VM RUNNING on the agent", 30_000);
    const config = (await agent.backend.getVMInfo(vm.id)).config;
    assert.deepEqual(config.storage.map((d) => [d.id, d.path]), [["data", join(agent.stateDir, "pools", poolId, `${v.id}.qcow2`)]], "the agent got the volume's file, from the agent's own answer");
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.IN_USE ? true : undefined), "volume IN_USE");
    const other = await volumes.createVolume({ name: "vm-disk-2", spec: { sizeGib: 1n, poolId } });
    await until(async () => ((await volumes.getVolume({ id: other.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "second volume AVAILABLE");
    const hot = await rejection(volumes.attachVolume({ id: other.id, vmId: vm.id }));
    assert.equal(hot.code, Code.FailedPrecondition);
    assert.match(hot.rawMessage, /lacks the 'disk-hotplug' capability/);
    assert.equal((await volumes.getVolume({ id: other.id })).status?.attachments.length, 0, "a refused attach changes nothing");
    await s.vms.deleteVM({ id: vm.id, force: true });
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "released when the VM is gone");
    await volumes.deleteVolume({ id: v.id });
    await volumes.deleteVolume({ id: other.id });
  });

  it("deletes the pool from the agent", async () => {
    await pools.deleteStoragePool({ id: poolId });
    await until(async () => ((await rejection(pools.getStoragePool({ id: poolId }))).code === Code.NotFound ? true : undefined), "pool gone");
    await assert.rejects(stat(join(agent.stateDir, "pools", poolId)));
  });
});
