import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Logger } from "@quantix/rpc";
import { startTestServer, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startControlPlaneLink } from "./control-plane-link.js";

function recordingLogger() {
  const lines: { msg: string; fields: Record<string, unknown> }[] = [];
  const log: Logger = { log: (_level, msg, fields = {}) => lines.push({ msg, fields }) };
  return { lines, log };
}

test("the agent registers real host facts, heartbeats, keeps its id, and stops (without registering again) once decommissioned", async () => {
  const cp = await startTestServer({ demo: false });
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-link-"));
  const backend = new SimulatedBackend();
  const { lines, log } = recordingLogger();
  const hostname = `link-${process.pid}`;
  const opts = { controlPlane: cp.url, agentUrl: "http://127.0.0.1:9999", nodeName: hostname, stateDir, backend, log, heartbeatMs: 50 };
  let link = startControlPlaneLink(opts);
  try {
    const ready = await until(async () => {
      const n = (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname === hostname);
      return n?.status?.phase === NodeStatus_Phase.READY && n.status.usage ? n : undefined;
    }, "the node to be READY with usage");
    assert.equal(ready.spec?.agentEndpoint, "http://127.0.0.1:9999");
    assert.ok((ready.spec?.cpu?.logicalCpus ?? 0) >= 1);
    assert.ok((ready.spec?.memory?.totalMib ?? 0n) > 0n);
    assert.ok((ready.spec?.storage.length ?? 0) > 0);
    assert.equal(ready.status?.hypervisor?.type, "simulated");
    assert.equal((await readFile(join(stateDir, "node-id"), "utf8")).trim(), ready.id);

    // A restarted agent keeps its identity.
    await link.stop();
    link = startControlPlaneLink(opts);
    await until(() => (link.nodeId() === ready.id ? true : undefined), "the same node id after a restart");

    // This control plane has no connection to the link's (fake) agent endpoint: force.
    await cp.nodes.decommissionNode({ id: ready.id, force: true });
    const why = await until(() => link.problem(), "the link to notice the decommission");
    assert.equal(why, `this node was decommissioned; remove ${join(stateDir, "node-id")} and restart the agent to register it again`);
    assert.ok(lines.some((l) => l.msg === why), "the reason is logged");
    assert.deepEqual((await cp.nodes.listNodes({})).nodes.filter((x) => x.hostname === hostname), []);

    // Removing node-id and restarting registers the host afresh, under a new id.
    await link.stop();
    await rm(join(stateDir, "node-id"));
    link = startControlPlaneLink(opts);
    const again = await until(async () => (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname === hostname), "a fresh registration");
    assert.notEqual(again.id, ready.id);
    assert.equal(link.problem(), undefined);
  } finally {
    await link.stop();
    await backend.close();
    await cp.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("an unreachable control plane is retried with growing backoff and logged", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-link-"));
  const backend = new SimulatedBackend();
  const { lines, log } = recordingLogger();
  const link = startControlPlaneLink({ controlPlane: "http://127.0.0.1:1", agentUrl: "http://127.0.0.1:9999", nodeName: "unreachable-host", stateDir, backend, log, backoffMs: 10, maxBackoffMs: 40 });
  try {
    const failures = await until(() => {
      const f = lines.filter((l) => l.msg === "control plane unreachable or refusing");
      return f.length >= 4 ? f : undefined;
    }, "four failed attempts");
    assert.deepEqual(failures.slice(0, 4).map((f) => f.fields["retry_in_ms"]), [10, 20, 40, 40]);
    assert.equal(failures[0]!.fields["code"], "Unavailable");
  } finally {
    await link.stop();
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("a control plane whose database was replaced (it never knew the node id) gets the host registered anew, not told it was decommissioned", async () => {
  let cp = await startTestServer({ demo: false });
  const port = cp.cp.port;
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-link-"));
  const backend = new SimulatedBackend();
  const { log } = recordingLogger();
  const hostname = `replaced-${process.pid}`;
  const link = startControlPlaneLink({ controlPlane: cp.url, agentUrl: "http://127.0.0.1:9999", nodeName: hostname, stateDir, backend, log, heartbeatMs: 50, backoffMs: 20, maxBackoffMs: 100 });
  try {
    const first = await until(async () => (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname === hostname && x.status?.phase === NodeStatus_Phase.READY), "the node READY");
    // The same address, an empty database: the old node id means nothing here.
    await cp.close();
    cp = await startTestServer({ demo: false, port });
    const again = await until(async () => (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname === hostname && x.status?.phase === NodeStatus_Phase.READY), "the host registered anew and READY", 15_000);
    assert.notEqual(again.id, first.id);
    assert.equal(link.problem(), undefined, "not told it was decommissioned");
    await until(async () => ((await readFile(join(stateDir, "node-id"), "utf8")).trim() === again.id ? true : undefined), "the new id kept");
  } finally {
    await link.stop();
    await backend.close();
    await cp.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});
