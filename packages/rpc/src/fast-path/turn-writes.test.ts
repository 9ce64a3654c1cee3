import assert from "node:assert/strict";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { TurnWrites } from "./turn-writes.js";

// Answers queued in one turn go out together at its end, each on its own connection; one
// that cannot be written (gone, or a header Node refuses) does not stop the others.

const writes = new TurnWrites();
/** Whether each answer had been written when its handler returned, by request path. */
const sentAtReturn = new Map<string, boolean>();
let held: http.ServerResponse | undefined;
let server: http.Server;
let port = 0;

before(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    const path = req.url ?? "";
    if (path === "/bad") {
      // Held until /good arrives, so that both are queued in one turn.
      held = res;
      return;
    }
    if (path === "/good") {
      writes.add(held!, 200, { "x-bad": "a\u0001b" }, Buffer.from("never"));
      held = undefined;
    }
    if (path === "/gone") {
      writes.add(res, 200, {}, Buffer.from("never"));
      res.destroy();
      return;
    }
    writes.add(res, 200, { "content-type": "text/plain", "content-length": "2" }, Buffer.from("ok"));
    sentAtReturn.set(path, res.headersSent);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

after(() => new Promise<void>((resolve) => server.close(() => resolve())));

function get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
  });
}

test("an answer goes out after its handler returns, at the end of the turn", async () => {
  assert.deepEqual(await get("/plain"), { status: 200, body: "ok" });
  assert.equal(sentAtReturn.get("/plain"), false);
});

test("an answer with a header Node refuses closes its connection; the turn's other answers still go out", async () => {
  const bad = get("/bad");
  await new Promise((r) => setTimeout(r, 50));
  const good = get("/good");
  await assert.rejects(bad, /socket hang up|ECONNRESET/);
  assert.deepEqual(await good, { status: 200, body: "ok" });
});

test("a response destroyed before the turn ends is skipped", async () => {
  await assert.rejects(get("/gone"), /socket hang up|ECONNRESET/);
  assert.deepEqual(await get("/after"), { status: 200, body: "ok" });
});
