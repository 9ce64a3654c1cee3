import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createClient } from "@connectrpc/connect";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { openConsoleSession } from "@quantix/testing";
import WebSocket from "ws";
import { startWorld, type World } from "../testing/identity-world.js";

// AttachConsole needs member (typing acts on the guest); the text door is GetConsoleOutput's
// (reader). The matrix leaves bidi RPCs out, so the key cases are here, over the RPC and
// over the doors. VM A is not placed on a node: a caller the policy lets through meets
// the handler's FAILED_PRECONDITION instead.

let w: World;
before(async () => {
  w = await startWorld();
});
after(() => w.close());

function attach(token: string | undefined, vmId: string) {
  const t = createConnectTransport({ baseUrl: w.url, httpVersion: "2", interceptors: [(next) => (req) => (token && req.header.set("authorization", `Bearer ${token}`), next(req))] });
  const c = createClient(VMService, t);
  return openConsoleSession((input, o) => c.attachConsole(input as never, o), { kind: { case: "attach", value: { vmId, write: true } } }).ended;
}

function wsStatus(token: string | undefined, vmId: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${w.url.replace(/^http/, "ws")}/v1/vms/${vmId}/console/ws?write=1${token ? `&access_token=${encodeURIComponent(token)}` : ""}`);
    ws.once("unexpected-response", (_req, res: IncomingMessage) => (res.resume(), resolve(res.statusCode ?? 0)));
    ws.once("open", () => (ws.close(), resolve(101)));
    ws.once("error", reject);
  });
}

test("AttachConsole: a reader is refused (role member), a member reaches the handler, a stranger sees NOT_FOUND", async () => {
  const reader = await attach(w.tokens.reader, w.vmA);
  assert.equal(reader?.code, Code.PermissionDenied);
  assert.match(reader.rawMessage, new RegExp(`requires role member in project ${w.projectA}`));
  const member = await attach(w.tokens.member, w.vmA);
  assert.equal(member?.code, Code.FailedPrecondition);
  assert.match(member.rawMessage, /not placed on a node/);
  assert.equal((await attach(w.tokens.member, w.vmB))?.code, Code.NotFound);
  assert.equal((await attach(undefined, w.vmA))?.code, Code.Unauthenticated);
});

test("the WebSocket door answers as AttachConsole, the text door as GetConsoleOutput", async () => {
  assert.equal(await wsStatus(w.tokens.reader, w.vmA), 403);
  assert.equal(await wsStatus(w.tokens.member, w.vmA), 400, "policy passed: FAILED_PRECONDITION (not placed)");
  assert.equal(await wsStatus(w.tokens.member, w.vmB), 404);
  assert.equal(await wsStatus(w.tokens["expired-token"], w.vmA), 401);
  const text = (token: string | undefined, vmId: string) => fetch(`${w.url}/v1/vms/${vmId}/console`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const byReader = await text(w.tokens.reader, w.vmA);
  assert.equal(byReader.status, 400, "a reader may read: the handler answers FAILED_PRECONDITION (not placed)");
  assert.match(await byReader.text(), /^failed_precondition: .*not placed on a node/);
  assert.equal((await text(w.tokens["member-of-other"], w.vmA)).status, 404);
});
