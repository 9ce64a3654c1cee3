import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import type { Logger } from "@quantix/rpc";
import { countsText, healthy, runFuzz, settledDigest, stateDigest } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "./app.js";
import { loadConfig } from "./config.js";

// A bounded fuzz run (the full one, 20,000 requests: `npm run bench -- --only=fuzz`):
// 2,000 malformed requests over Connect JSON, Connect binary, gRPC and gRPC-Web against a
// real control plane with a few VMs. Bad input gets a client's error and changes nothing:
// no INTERNAL answer, no unanswered request, the server alive and healthy, the store at
// the same revision with the same objects. Error-level log lines are counted and shown
// (a client's error should not be the server's), not asserted here.

const SEED = 20261204;
const COUNT = 2_000;

/** Counts the error-level lines a server logs, keeping the first few. */
function countingLogger(): Logger & { errors: string[] } {
  const errors: string[] = [];
  return {
    errors,
    log(level, msg, fields) {
      if (level === "error") errors.push(`${msg} ${JSON.stringify(fields ?? {}).slice(0, 300)}`);
    },
  };
}

let cp: ControlPlane;
const log = countingLogger();
const vmIds: string[] = [];

before(async () => {
  const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "memory" }, demo: false, logLevel: "warn", defaultDeadlineMs: 2000, shutdownGraceMs: 2000 });
  cp = await startControlPlane(config, { log });
  const vms = createClient(VMService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" }));
  for (let i = 0; i < 4; i++) {
    const vm = await vms.createVM({ name: `fuzz-seed-${i}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
    vmIds.push(vm.id);
  }
});
after(() => cp?.close());

test(`${COUNT} malformed requests: no INTERNAL, no crash, no state change`, { timeout: 300_000 }, async (t) => {
  const before = await settledDigest(cp.url);
  const errorsBefore = log.errors.length;
  const r = await runFuzz({ url: cp.url, seed: SEED, count: COUNT, vmIds });
  // The refused writes are recorded in the audit trail (after the answers): the only change allowed.
  await cp.audit.flush();
  const afterState = await stateDigest(cp.url);
  const alive = await healthy(cp.url);
  t.diagnostic(`${r.requests} requests in ${Math.round(r.ms)} ms; per protocol: ${countsText(r.byProtocol)}`);
  t.diagnostic(`answers: ${countsText(r.byCode)}`);
  t.diagnostic(`INTERNAL: ${countsText(r.internal)}`);
  t.diagnostic(`unanswered: ${countsText(r.unanswered)}`);
  t.diagnostic(`state: revision ${before.revision} -> ${afterState.revision}, digest ${before.digest} -> ${afterState.digest}, audit records ${before.auditRecords} -> ${afterState.auditRecords}; error log lines ${log.errors.length - errorsBefore}`);
  for (const line of log.errors.slice(errorsBefore, errorsBefore + 3)) t.diagnostic(`error log line: ${line}`);

  assert.equal(r.requests, COUNT);
  assert.ok(alive, "the server no longer answers its health check");
  assert.equal(afterState.digest, before.digest, "the fuzz run changed the store");
  assert.equal(BigInt(afterState.revision) - BigInt(before.revision), BigInt(afterState.auditRecords - before.auditRecords), "the fuzz run wrote something besides its audit records");
  assert.ok(afterState.auditRecords > before.auditRecords, "the refused writes are in the audit trail");
  assert.deepEqual(r.unanswered, {}, `requests without an answer: ${countsText(r.unanswered)}`);
  assert.deepEqual(r.internal, {}, `INTERNAL answers: ${countsText(r.internal)}`);
});
