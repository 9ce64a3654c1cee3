import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ConsoleEventSchema, ConsoleInputSchema, ConsoleRoleKind, VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { grpcJsBidi, openConsoleSession, startTestServer, TestAgent, until, type ConsoleInputInit, type TestServer } from "@quantix/testing";
import WebSocket from "ws";

let s: TestServer;
let agent: TestAgent<SimulatedBackend>;
let dir: string;
let vmId: string;

before(async () => {
  s = await startTestServer({ demo: false });
  dir = await mkdtemp(join(tmpdir(), "quantix-console-"));
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 0 }), dir, `console-agent-${process.pid}`);
  await agent.start(s.url);
  const kernelPath = await agent.image("vmlinuz");
  const nodeId = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY");
  const vm = await s.vms.createVM({ name: "console-vm", nodeId, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath, cmdline: "console=ttyS0" } } } });
  await s.vms.startVM({ id: vm.id });
  vmId = vm.id;
});

after(async () => {
  await agent.kill().catch(() => undefined);
  await s.close();
  await agent.backend.close();
  await rm(dir, { recursive: true, force: true });
});

const attach = (id: string, o: { write?: boolean; force?: boolean; tailBytes?: number } = {}): ConsoleInputInit => ({ kind: { case: "attach", value: { vmId: id, ...o } } });
const UNKNOWN = "00000000-0000-0000-0000-00000000dead";

/** A grpc-js AttachConsole session: its role events and text, read in the background. */
function grpcJsSession(first: ConsoleInputInit) {
  const call = grpcJsBidi(`127.0.0.1:${new URL(s.url).port}`, grpc.credentials.createInsecure(), "/Quantixkvm.compute.v1.VMService/AttachConsole", ConsoleInputSchema, ConsoleEventSchema);
  call.write(first as never);
  const roles: { role: number; droppedBytes: number; writerPresent: boolean }[] = [];
  let text = "";
  const ended = (async () => {
    try {
      for await (const e of call.responses) {
        if (e.kind.case === "role") roles.push(e.kind.value);
        if (e.kind.case === "output") text += Buffer.from(e.kind.value.data).toString("utf8");
      }
      return undefined;
    } catch (err) {
      return err as grpc.ServiceError;
    }
  })();
  return { call, roles, text: () => text, ended };
}

test("AttachConsole through the control plane: connect-es (h2) writes, a grpc-js session views, then takes the role with force", async () => {
  const connect = createClient(VMService, createConnectTransport({ baseUrl: s.url, httpVersion: "2" }));
  const a = openConsoleSession((input, o) => connect.attachConsole(input as never, o), attach(vmId, { write: true, tailBytes: 65536 }));
  const g = grpcJsSession(attach(vmId, { write: true }));
  try {
    assert.equal((await a.waitRole(() => true, "a attached")).role, ConsoleRoleKind.WRITER);
    await a.waitText("simulated console: booted");
    const gRole = await until(() => g.roles[0], "grpc-js attached");
    assert.equal(gRole.role, ConsoleRoleKind.VIEWER);
    assert.equal(gRole.writerPresent, true);

    a.type("typed-through-connect");
    await until(() => (g.text().includes("typed-through-connect") ? true : undefined), "the viewer sees the writer's input echoed");
    g.call.write({ kind: { case: "data", value: new TextEncoder().encode("VIEWER-INPUT") } });
    await until(() => g.roles.find((r) => r.droppedBytes === 12), "the viewer's input dropped");

    // A third session (grpc-js) takes the role with force; a is told.
    const seen = a.roles.length;
    const f = grpcJsSession(attach(vmId, { write: true, force: true }));
    try {
      assert.equal((await until(() => f.roles[0], "forced attach")).role, ConsoleRoleKind.WRITER);
      await a.waitRole((r) => r.role === ConsoleRoleKind.DISPLACED, "a displaced", seen);
      f.call.write({ kind: { case: "data", value: new TextEncoder().encode("FROM-GRPC-JS") } });
      await a.waitText("FROM-GRPC-JS");
    } finally {
      f.call.cancel();
      await f.ended;
    }
    assert.ok(!a.text().includes("VIEWER-INPUT"));
  } finally {
    g.call.cancel();
    await g.ended;
    await a.close();
  }
});

test("AttachConsole through the control plane: errors name what is wrong", async () => {
  const connect = createClient(VMService, createConnectTransport({ baseUrl: s.url, httpVersion: "2" }));
  const open = (first: ConsoleInputInit) => openConsoleSession((input, o) => connect.attachConsole(input as never, o), first).ended;
  const unknown = await open(attach(UNKNOWN));
  assert.equal(unknown?.code, Code.NotFound);
  assert.match(unknown.rawMessage, new RegExp(UNKNOWN));
  const early = await open({ kind: { case: "data", value: new Uint8Array([1]) } });
  assert.equal(early?.code, Code.FailedPrecondition);
  assert.match(early.rawMessage, /first AttachConsole message must be attach/);
  const big = openConsoleSession((input, o) => connect.attachConsole(input as never, o), attach(vmId, { write: true }));
  await big.waitRole(() => true, "attached");
  big.type(new Uint8Array(5000));
  const e = await big.ended;
  assert.equal(e?.code, Code.InvalidArgument);
  assert.match(e.rawMessage, /data: must hold 1-4096 bytes, got 5000/);
});

/** Opens a WebSocket; resolves once open (or with the HTTP refusal's status and body). */
function openWs(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; frames: (string | Buffer)[] } | { status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    const frames: (string | Buffer)[] = [];
    ws.on("message", (data: Buffer, isBinary: boolean) => frames.push(isBinary ? data : data.toString("utf8")));
    ws.once("open", () => resolve({ ws, frames }));
    ws.once("unexpected-response", (_req, res: IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString("utf8")));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once("error", reject);
  });
}

const wsUrl = (base: string, id: string, query: string) => `${base.replace(/^http/, "ws")}/v1/vms/${id}/console/ws${query}`;

test("WebSocket console: JSON role frames, binary input echoed back as binary output; refusals are HTTP statuses", async () => {
  const opened = await openWs(wsUrl(s.url, vmId, "?write=1&tail_bytes=65536"));
  assert.ok("ws" in opened);
  const { ws, frames } = opened;
  try {
    const role = await until(() => frames.find((f): f is string => typeof f === "string"), "a role frame");
    assert.deepEqual({ ...JSON.parse(role), message: undefined }, { type: "role", role: "writer", writer_present: true, message: undefined, dropped_bytes: 0 });
    const output = () => Buffer.concat(frames.filter((f): f is Buffer => typeof f !== "string")).toString("utf8");
    await until(() => (output().includes("simulated console: booted") ? true : undefined), "the scroll-back");
    ws.send(Buffer.from("typed-over-websocket"));
    await until(() => (output().includes("typed-over-websocket") ? true : undefined), "the echo");
  } finally {
    ws.close();
  }
  const unknown = await openWs(wsUrl(s.url, UNKNOWN, ""));
  assert.ok("status" in unknown);
  assert.equal(unknown.status, 404);
  assert.match(unknown.body, /^not_found: .*00000000-0000-0000-0000-00000000dead/);
  const bad = await openWs(wsUrl(s.url, vmId, "?tail_bytes=lots"));
  assert.ok("status" in bad);
  assert.equal(bad.status, 400);
  assert.match(bad.body, /tail_bytes/);
});

test("GET /v1/vms/{id}/console answers the console as text/plain", async () => {
  const res = await fetch(`${s.url}/v1/vms/${vmId}/console?tail_bytes=65536`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.match(await res.text(), /simulated console: booted/);
  const unknown = await fetch(`${s.url}/v1/vms/${UNKNOWN}/console`);
  assert.equal(unknown.status, 404);
  assert.match(await unknown.text(), new RegExp(`^not_found: .*${UNKNOWN}`));
  const bad = await fetch(`${s.url}/v1/vms/${vmId}/console?tail_bytes=-1`);
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /^invalid_argument: tail_bytes/);
});

test("without local trust, the console's HTTP doors need the API's token (header or access_token)", async () => {
  const locked = await startTestServer({ demo: false, localTrust: false });
  try {
    const noToken = await fetch(`${locked.url}/v1/vms/${UNKNOWN}/console`);
    assert.equal(noToken.status, 401);
    assert.match(await noToken.text(), /^unauthenticated: a bearer token is required/);
    const withToken = await fetch(`${locked.url}/v1/vms/${UNKNOWN}/console`, { headers: { authorization: `Bearer ${locked.adminToken}` } });
    assert.equal(withToken.status, 404, "authenticated: the VM is looked up");
    const wrongToken = await fetch(`${locked.url}/v1/vms/${UNKNOWN}/console?access_token=not-a-token`);
    assert.equal(wrongToken.status, 401);

    const wsNoToken = await openWs(wsUrl(locked.url, UNKNOWN, "?write=1"));
    assert.ok("status" in wsNoToken);
    assert.equal(wsNoToken.status, 401);
    const wsToken = await openWs(wsUrl(locked.url, UNKNOWN, `?write=1&access_token=${encodeURIComponent(locked.adminToken!)}`));
    assert.ok("status" in wsToken);
    assert.equal(wsToken.status, 404, "authenticated by access_token: the VM is looked up");
  } finally {
    await locked.close();
  }
});
