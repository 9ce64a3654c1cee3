import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import type { Logger } from "@quantix/rpc";
import type { BackendVmInfo } from "../backend.js";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { healthFallback } from "./health.js";

// The agent's plain-HTTP endpoints over a real socket: what a failing /metrics tells the
// scraper (nothing of the host) and the log (the cause), and /_/health's decommission answer.

const SECRET = "/var/lib/quantix-secret/qemu/vms/x/qmp.sock";

/** A backend whose VM listing fails with an error naming a host path. */
class BrokenListing extends SimulatedBackend {
  override async listVMs(): Promise<BackendVmInfo[]> {
    throw new Error(`ENOENT: no such file or directory, open '${SECRET}'`);
  }
}

const backend = new BrokenListing();
const lines: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
const log: Logger = { log: (level, msg, fields = {}) => lines.push({ level, msg, fields }) };
let problem: string | undefined;
let server: Server;
let url: string;

before(async () => {
  const fallback = healthFallback(backend, "test", { log, problem: () => problem });
  server = createServer((req, res) => fallback(req, res));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
  await backend.close();
});

test("a failing /metrics answers 503 with a generic message; the cause goes to the log only", async () => {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 503);
  const body = await res.text();
  assert.doesNotMatch(body, /quantix-secret|ENOENT/);
  assert.match(body, /see the agent's log/);
  const logged = lines.find((l) => l.msg === "rendering /metrics failed");
  assert.equal(logged?.level, "error");
  assert.match(String(logged?.fields["error"]), /quantix-secret/);
});

test("/_/health answers 503 with the link's problem while there is one, 200 otherwise", async () => {
  assert.equal((await fetch(`${url}/_/health`)).status, 200);
  problem = "this node was decommissioned; remove /x/node-id and restart the agent to register it again";
  const res = await fetch(`${url}/_/health`);
  assert.equal(res.status, 503);
  assert.deepEqual(((await res.json()) as { status: string; reason: string }).reason, problem);
  problem = undefined;
});
