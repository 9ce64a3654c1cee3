import assert from "node:assert/strict";
import { test } from "node:test";
import { loadConfig } from "../config.js";

test("QUANTIX_DEFAULT_QUOTA is a JSON object of limits; anything else stops the start naming it", () => {
  assert.deepEqual(loadConfig({}).defaultQuota, {});
  assert.deepEqual(loadConfig({ QUANTIX_DEFAULT_QUOTA: '{"vms": 50, "vcpus": -1, "memory_mib": 409600}' }).defaultQuota, { vms: 50, vcpus: -1, memory_mib: 409600 });
  for (const bad of ["50", "{vms: 1}", '{"vms": -2}', '{"vms": 1.5}', '{"cpus": 4}', '{"vms": "5"}', "[1]"]) {
    assert.throws(() => loadConfig({ QUANTIX_DEFAULT_QUOTA: bad }), /QUANTIX_DEFAULT_QUOTA must be a JSON object of limits/, bad);
  }
});

test("rate limits are off unless QUANTIX_RATE_LIMIT_RPS is set; the burst defaults to twice the rate", () => {
  assert.deepEqual([loadConfig({}).rateLimitRps], [0]);
  const c = loadConfig({ QUANTIX_RATE_LIMIT_RPS: "50" });
  assert.deepEqual([c.rateLimitRps, c.rateLimitBurst], [50, 100]);
  assert.equal(loadConfig({ QUANTIX_RATE_LIMIT_RPS: "50", QUANTIX_RATE_LIMIT_BURST: "7" }).rateLimitBurst, 7);
  assert.throws(() => loadConfig({ QUANTIX_RATE_LIMIT_RPS: "-1" }), /QUANTIX_RATE_LIMIT_RPS/);
  assert.equal(loadConfig({}).auditRetentionSec, 90 * 86_400);
});
