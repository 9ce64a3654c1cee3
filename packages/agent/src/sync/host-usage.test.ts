import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { silentLogger } from "@quantix/rpc";
import { startTestServer, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startControlPlaneLink } from "./control-plane-link.js";
import { readCpuTimes, readUsage } from "./host-facts.js";
import { readHostIo } from "./host-io.js";

// Host usage says what it could not measure instead of reporting zeros as measurements.

const MISSING = { diskstats: "/nonexistent/quantix/diskstats", netdev: "/nonexistent/quantix/net-dev" };

test("unreadable /proc counters are unmeasured, not zero", async () => {
  assert.deepEqual(await readHostIo(MISSING), {});
  const real = await readHostIo();
  assert.ok(real.disk && real.network, "this host's own counters are readable");
  const u = await readUsage(undefined, await readCpuTimes(), MISSING);
  assert.deepEqual([...u.notMeasured].sort(), ["cpu_usage_percent", "disk_read_bytes", "disk_write_bytes", "network_rx_bytes", "network_tx_bytes"]);
  assert.equal(u.diskReadBytes, 0n);
  assert.ok(u.memoryTotalMib > 0n, "memory is still measured");
});

test("CPU percent needs two samples apart in time", async () => {
  assert.equal(await readCpuTimes("/nonexistent/quantix/stat"), undefined);
  const a = await readCpuTimes();
  assert.ok(a);
  assert.ok((await readUsage(a, a)).notMeasured.includes("cpu_usage_percent"), "no time between the samples");
  const b = await until(async () => ((t) => (t && t.total > a.total ? t : undefined))(await readCpuTimes()), "the CPU counters to move");
  const u = await readUsage(a, b);
  assert.ok(!u.notMeasured.includes("cpu_usage_percent"));
  assert.ok(u.cpuUsagePercent >= 0 && u.cpuUsagePercent <= 100);
});

test("the first heartbeat's CPU percent is measured from a sample taken when the link starts", async () => {
  const cp = await startTestServer({ demo: false });
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-host-usage-"));
  const backend = new SimulatedBackend();
  const hostname = `usage-${process.pid}`;
  // One heartbeat only within the test: the next is ten minutes away.
  const link = startControlPlaneLink({ controlPlane: cp.url, agentUrl: "http://127.0.0.1:9999", nodeName: hostname, stateDir, backend, log: silentLogger, heartbeatMs: 600_000 });
  try {
    const node = await until(async () => (await cp.nodes.listNodes({})).nodes.find((x) => x.hostname === hostname && x.status?.usage), "the first heartbeat");
    const u = node.status!.usage!;
    assert.ok(!u.notMeasured.includes("cpu_usage_percent"), `measured: ${JSON.stringify(u.notMeasured)}`);
    assert.ok(u.cpuUsagePercent > 0 && u.cpuUsagePercent <= 100, `a host that just started a control plane is not idle: ${u.cpuUsagePercent}`);
    assert.deepEqual(u.notMeasured, []);
  } finally {
    await link.stop();
    await backend.close();
    await cp.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});
