import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Code } from "@connectrpc/connect";
import { silentLogger } from "@quantix/rpc";
import { rejection, startTestServer, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startControlPlaneLink } from "./control-plane-link.js";

test("GetNodeMetrics answers the agent's last heartbeat (the host's /proc); a simulated demo node has none to give", async () => {
  const cp = await startTestServer({ demo: true });
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-node-metrics-"));
  const backend = new SimulatedBackend();
  const hostname = `metrics-${process.pid}`;
  const link = startControlPlaneLink({ controlPlane: cp.url, agentUrl: "http://127.0.0.1:9999", nodeName: hostname, stateDir, backend, log: silentLogger, heartbeatMs: 100 });
  try {
    const node = await until(async () => (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname === hostname && x.status?.usage), "a heartbeat with usage");
    // The same heartbeat, read twice: the RPC returns what the node's status holds.
    const m = await cp.nodes.getNodeMetrics({ id: node.id });
    const status = (await cp.nodes.getNode({ id: node.id })).status!;
    if (m.sampledAt?.seconds === status.lastHeartbeat?.seconds && m.sampledAt?.nanos === status.lastHeartbeat?.nanos) assert.deepEqual(m.usage, status.usage);
    assert.equal(m.nodeId, node.id);
    const u = m.usage!;
    const meminfoTotalMib = Math.floor(Number(/^MemTotal:\s+(\d+)/m.exec(await readFile("/proc/meminfo", "utf8"))![1]) / 1024);
    assert.equal(Number(u.memoryTotalMib), meminfoTotalMib);
    assert.ok(u.memoryUsedMib > 0n && u.memoryUsedMib <= u.memoryTotalMib);
    assert.ok(u.cpuUsagePercent >= 0 && u.cpuUsagePercent <= 100);
    assert.ok(Math.abs(u.loadAverage15m - (os.loadavg()[2] ?? 0)) < 1, "the 15-minute load moves slowly");
    assert.ok(u.diskReadBytes > 0n, "a booted host has read from its disks");
    const sampled = Number(m.sampledAt!.seconds) * 1000;
    assert.ok(Math.abs(Date.now() - sampled) < 10_000);
    // The counters only grow from one heartbeat to the next.
    const later = await until(async () => {
      const n = await cp.nodes.getNodeMetrics({ id: node.id });
      return Number(n.sampledAt!.seconds) * 1e9 + n.sampledAt!.nanos > Number(m.sampledAt!.seconds) * 1e9 + m.sampledAt!.nanos ? n : undefined;
    }, "a later heartbeat");
    assert.ok(later.usage!.diskReadBytes >= u.diskReadBytes);

    const demo = (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname !== hostname)!;
    const err = await rejection(cp.nodes.getNodeMetrics({ id: demo.id }));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.message, /no measured usage/);
    assert.equal((await rejection(cp.nodes.getNodeMetrics({ id: "no-such-node" }))).code, Code.NotFound);
  } finally {
    await link.stop();
    await backend.close();
    await cp.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});
