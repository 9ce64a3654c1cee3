import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { MISSED_HEARTBEATS, OFFLINE_AFTER_SEC } from "./controllers/node-monitor.js";
import { PENDING_SERVICES } from "./rpc/catalog.js";
import { HEARTBEAT_INTERVAL_SEC } from "./services/node-service.js";

// The API pages state facts the code decides; these checks keep the two from drifting
// (they once said GetNodeMetrics was UNIMPLEMENTED and a silent node OFFLINE after 40 s).

const page = (name: string) => readFileSync(new URL(`../../../docs/api/${name}`, import.meta.url), "utf8");

test("the compute API pages call no served service UNIMPLEMENTED", () => {
  for (const svc of [NodeService, VMService]) assert.ok(!PENDING_SERVICES.some((p) => p.service.typeName === svc.typeName), `${svc.typeName} is served`);
  for (const name of ["node-service.md", "vm-service.md"]) assert.doesNotMatch(page(name), /UNIMPLEMENTED/, name);
});

test("node-service.md states the node monitor's NOT_READY and OFFLINE times", () => {
  const doc = page("node-service.md").replace(/\s+/g, " ");
  assert.ok(doc.includes(`every ${HEARTBEAT_INTERVAL_SEC} s`), "heartbeat interval");
  assert.ok(doc.includes(`silent for ${MISSED_HEARTBEATS * HEARTBEAT_INTERVAL_SEC} s (three intervals) becomes \`NOT_READY\``), "NOT_READY after");
  assert.ok(doc.includes(`\`QUANTIX_NODE_LOST_AFTER_SEC\` (default ${OFFLINE_AFTER_SEC} s) \`OFFLINE\``), "OFFLINE after");
});
