import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { NodeUpdate } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { TaintEffect, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { collect, rejection, startTestServer, until, type TestServer } from "@quantix/testing";

// NodeService over the wire: registration, heartbeats, operator settings, decommission
// and the watch, each checked by reading the node back.

const HV1 = "00000000-0000-0000-0001-000000000001";
const WEB = "11111111-1111-1111-1111-111111111111";
const DEV = "33333333-3333-3333-3333-333333333333";

const violatedFields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

function registration(hostname: string, cpus: number, memMib: bigint, labels: Record<string, string> = {}) {
  return { hostname, managementIp: "192.0.2.10", labels, cpuInfo: { logicalCpus: cpus }, memoryInfo: { totalMib: memMib }, hypervisor: { type: "qemu" } };
}

/** An async iterable that keeps reading one stream across several collect() calls. */
function resumable<T>(stream: AsyncIterable<T>): AsyncIterable<T> {
  const it = stream[Symbol.asyncIterator]();
  return { [Symbol.asyncIterator]: () => it };
}

describe("node registration and settings", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false });
  });
  after(() => s.close());

  it("registers a host as PENDING with its capacity, and again idempotently by hostname", async () => {
    const first = await s.nodes.registerNode(registration("kvm-a.example.com", 16, 32_768n));
    assert.notEqual(first.id, "");
    assert.equal(first.status?.phase, Phase.PENDING);
    assert.equal(first.status?.hypervisor?.type, "qemu");
    assert.equal(first.spec?.schedulable, true);
    assert.equal(first.status?.capacity?.cpuCores, 16);
    assert.equal(first.status?.capacity?.memoryMib, 32_768n);
    // CPU is overcommitted 4.0 by default (Nova's initial ratio); memory is not.
    assert.equal(first.status?.allocatable?.cpuCores, 64);
    assert.equal(first.status?.allocatable?.memoryMib, 32_768n);

    const again = await s.nodes.registerNode(registration("kvm-a.example.com", 32, 65_536n));
    assert.equal(again.id, first.id);
    const node = await s.nodes.getNode({ id: first.id });
    assert.equal(node.spec?.cpu?.logicalCpus, 32);
    assert.equal(node.status?.capacity?.cpuCores, 32);
    assert.equal(node.status?.allocatable?.memoryMib, 65_536n);
    const all = await s.nodes.listNodes({});
    assert.deepEqual(all.nodes.filter((n) => n.hostname === "kvm-a.example.com").map((n) => n.id), [first.id]);
  });

  it("a live node has one agent: a registration without its id is ALREADY_EXISTS naming it; its own agent re-registers", async () => {
    const node = await s.nodes.registerNode({ ...registration("kvm-one-agent", 4, 8192n), agentEndpoint: "http://192.0.2.10:9090" });
    await s.nodes.updateHeartbeat({ id: node.id });
    const err = await rejection(s.nodes.registerNode({ ...registration("kvm-one-agent", 4, 8192n), agentEndpoint: "http://192.0.2.10:9091" }));
    assert.equal(err.code, Code.AlreadyExists, err.message);
    assert.match(err.rawMessage, new RegExp(`node 'kvm-one-agent' \\(${node.id}\\) already has a live agent at http://192\\.0\\.2\\.10:9090`));
    assert.match(err.rawMessage, /another node name \(QUANTIX_NODE_NAME or --node-name\)/);
    assert.equal((await s.nodes.getNode({ id: node.id })).spec?.agentEndpoint, "http://192.0.2.10:9090", "nothing changed");
    // The same agent, restarted (it keeps its node id), is let in at once.
    const again = await s.nodes.registerNode({ ...registration("kvm-one-agent", 4, 8192n), agentEndpoint: "http://192.0.2.10:9092", nodeId: node.id });
    assert.equal(again.id, node.id);
    assert.equal(again.spec?.agentEndpoint, "http://192.0.2.10:9092");
  });

  it("a heartbeat makes a node READY", async () => {
    const node = await s.nodes.registerNode(registration("kvm-b", 8, 16_384n));
    assert.equal(node.status?.phase, Phase.PENDING);
    const res = await s.nodes.updateHeartbeat({ id: node.id, usage: { cpuUsagePercent: 12.5, memoryUsedMib: 1024n } });
    assert.equal(res.phase, Phase.READY);
    assert.ok(res.heartbeatIntervalSec > 0);
    const read = await s.nodes.getNode({ id: node.id });
    assert.equal(read.status?.phase, Phase.READY);
    assert.ok(read.status?.lastHeartbeat);
    assert.equal(read.status?.usage?.memoryUsedMib, 1024n);
  });

  it("DisableNode and EnableNode set schedulable; repeating one changes nothing", async () => {
    const node = await s.nodes.registerNode(registration("kvm-c", 8, 16_384n));
    const disabled = await s.nodes.disableNode({ id: node.id });
    assert.equal(disabled.spec?.schedulable, false);
    assert.equal((await s.nodes.getNode({ id: node.id })).spec?.schedulable, false);
    const enabled = await s.nodes.enableNode({ id: node.id });
    assert.equal(enabled.spec?.schedulable, true);
    const again = await s.nodes.enableNode({ id: node.id });
    assert.equal(again.spec?.schedulable, true);
    assert.equal(again.resourceVersion, enabled.resourceVersion);
  });

  it("UpdateNode sets taints by mask, refuses a stale resource_version and an unknown path", async () => {
    const node = await s.nodes.registerNode(registration("kvm-d", 8, 16_384n));
    const taint = { key: "dedicated", value: "gpu", effect: TaintEffect.NO_SCHEDULE };
    const updated = await s.nodes.updateNode({ id: node.id, spec: { taints: [taint] }, updateMask: { paths: ["spec.taints"] }, resourceVersion: node.resourceVersion });
    const read = await s.nodes.getNode({ id: node.id });
    assert.deepEqual(read.spec?.taints.map((t) => ({ key: t.key, value: t.value, effect: t.effect })), [taint]);
    assert.equal(read.spec?.cpu?.logicalCpus, 8, "hardware outside the mask is kept");
    assert.ok(updated.resourceVersion > node.resourceVersion);

    const stale = await rejection(s.nodes.updateNode({ id: node.id, spec: { taints: [] }, updateMask: { paths: ["spec.taints"] }, resourceVersion: node.resourceVersion }));
    assert.equal(stale.code, Code.Aborted);

    const unknown = await rejection(s.nodes.updateNode({ id: node.id, updateMask: { paths: ["spec.no_such_field"] } }));
    assert.equal(unknown.code, Code.InvalidArgument);
    assert.deepEqual(violatedFields(unknown), ["update_mask.paths[0]"]);
    assert.match(unknown.rawMessage, /no_such_field/);

    const after = await s.nodes.getNode({ id: node.id });
    assert.equal(after.resourceVersion, updated.resourceVersion, "failed updates changed nothing");
    assert.equal(after.spec?.taints.length, 1);
  });

  it("an invalid registration names every bad field and registers nothing", async () => {
    const before = (await s.nodes.listNodes({})).totalCount;
    const e = await rejection(s.nodes.registerNode({ ...registration("bad host!", 8, 16_384n), managementIp: "x" }));
    assert.equal(e.code, Code.InvalidArgument);
    const fields = violatedFields(e);
    assert.ok(fields.includes("hostname"), JSON.stringify(fields));
    assert.ok(fields.includes("management_ip"), JSON.stringify(fields));
    assert.equal((await s.nodes.listNodes({})).totalCount, before);
  });

  it("WatchNodes sees ADDED for an existing node, MODIFIED on a heartbeat, then unschedulable and DELETED on decommission", async () => {
    const label = { suite: `watch-${randomBytes(4).toString("hex")}` };
    const node = await s.nodes.registerNode(registration("kvm-watched", 4, 8192n, label));
    const ac = new AbortController();
    try {
      const stream = resumable(s.nodes.watchNodes({ labels: label }, { signal: ac.signal }));
      const snapshot = await collect(stream, (xs) => xs.some((u) => u.type === EventType.SYNCED));
      assert.deepEqual(snapshot.map((u) => [u.type, u.node?.id]), [[EventType.ADDED, node.id], [EventType.SYNCED, undefined]]);

      await s.nodes.updateHeartbeat({ id: node.id });
      const modified = await collect(stream, (xs) => xs.length === 1);
      assert.equal(modified[0]!.type, EventType.MODIFIED);
      assert.equal(modified[0]!.node?.id, node.id);
      assert.equal(modified[0]!.node?.status?.phase, Phase.READY);

      // Decommission first makes the node unschedulable (no placement can race it), then deletes it.
      // No agent serves this node, so its copies cannot be checked: force.
      await s.nodes.decommissionNode({ id: node.id, force: true });
      const gone = await collect(stream, (xs) => xs.length === 2);
      assert.deepEqual(gone.map((u: NodeUpdate) => [u.type, u.node?.id, u.node?.spec?.schedulable]), [
        [EventType.MODIFIED, node.id, false],
        [EventType.DELETED, node.id, false],
      ]);
      assert.ok(gone[1]!.resourceVersion > modified[0]!.resourceVersion);
    } finally {
      ac.abort();
    }
    assert.equal((await rejection(s.nodes.getNode({ id: node.id }))).code, Code.NotFound);
  });

  it("DrainNode of a node without VMs makes it unschedulable and Drained", async () => {
    const node = await s.nodes.registerNode(registration("kvm-e", 8, 16_384n));
    const res = await s.nodes.drainNode({ id: node.id });
    assert.equal(res.node?.spec?.schedulable, false);
    assert.equal(res.node?.status?.conditions.find((c) => c.type === "Drained")?.reason, "Drained");
    assert.deepEqual([res.migratedVmIds, res.stoppedVmIds, res.failures], [[], [], []]);
    assert.equal((await rejection(s.nodes.drainNode({ id: node.id, targetNodeId: node.id }))).code, Code.InvalidArgument);
  });
});

describe("decommissioning a node with VMs", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.close());

  it("is refused without force, naming the node's hostname, and changes nothing", async () => {
    const e = await rejection(s.nodes.decommissionNode({ id: HV1 }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.rawMessage, /hypervisor-01/);
    assert.equal((await s.nodes.getNode({ id: HV1 })).hostname, "hypervisor-01");
    assert.equal((await s.vms.getVM({ id: DEV })).status?.nodeId, HV1);
  });

  it("with force removes the node and its VMs lose it", async () => {
    const ac = new AbortController();
    const webEvents: VirtualMachine[] = [];
    const watching = (async () => {
      for await (const u of s.vms.watchVM({ vmId: WEB }, { signal: ac.signal })) if (u.vm) webEvents.push(u.vm);
    })().catch(() => undefined);
    try {
      await until(() => (webEvents.length > 0 ? true : undefined), "the first WatchVM event");
      assert.equal(webEvents[0]!.status?.nodeId, HV1);

      await s.nodes.decommissionNode({ id: HV1, force: true });
      assert.equal((await rejection(s.nodes.getNode({ id: HV1 }))).code, Code.NotFound);

      const dev = await s.vms.getVM({ id: DEV });
      assert.equal(dev.status?.nodeId, "");

      // The running VM loses its node too (the scheduler may then place it elsewhere).
      await until(() => (webEvents.some((vm) => vm.status?.nodeId === "") ? true : undefined), "web-server-01 to lose its node");
      const web = await s.vms.getVM({ id: WEB });
      assert.notEqual(web.status?.nodeId, HV1);
      const nodes = (await s.nodes.listNodes({})).nodes.map((n) => n.hostname).sort();
      assert.deepEqual(nodes, ["hypervisor-02", "hypervisor-03"]);
    } finally {
      ac.abort();
      await watching;
    }
  });
});
