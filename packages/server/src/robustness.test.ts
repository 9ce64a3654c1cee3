import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";

import { fromBinary } from "@bufbuild/protobuf";
import { BadRequestSchema, type BadRequest } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { startTestServer, type TestServer } from "@quantix/testing";
import { MemoryGateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import type { QuantixError } from "@quantix/core";
import { unimplementedImpl } from "./rpc/unimplemented-routes.js";

// Bad input over the wire (Connect JSON on HTTP/1.1, plain fetch): each gets a clear
// error, changes nothing, and the server keeps serving.

const VMS = "/Quantixkvm.compute.v1.VMService";
const PROJECT = "00000000-0000-0000-0000-000000000001";
const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: "512" } };

/** A Connect error as it travels in an HTTP response body. */
interface WireError {
  code: string;
  message: string;
  details?: { type: string; value: string }[];
}

interface Reply {
  status: number;
  body: unknown;
}

async function post(url: string, path: string, body: string | Uint8Array, contentType = "application/json"): Promise<Reply> {
  const res = await fetch(url + path, { method: "POST", headers: { "content-type": contentType }, body });
  const text = await res.text();
  let parsed: unknown = text;
  if ((res.headers.get("content-type") ?? "").startsWith("application/json") && text !== "") parsed = JSON.parse(text);
  return { status: res.status, body: parsed };
}

const call = (url: string, method: string, msg: unknown) => post(url, `${VMS}/${method}`, JSON.stringify(msg));

/** Asserts a Connect error reply and returns it. */
function expectError(r: Reply, httpStatus: number, code: string): WireError {
  assert.equal(r.status, httpStatus, `HTTP status for ${JSON.stringify(r.body)}`);
  const e = r.body as WireError;
  assert.equal(e.code, code, `code of ${JSON.stringify(r.body)}`);
  assert.equal(typeof e.message, "string");
  assert.ok(e.message.length > 0);
  return e;
}

/** The google.rpc.BadRequest detail of an error, decoded from its base64 value. */
function badRequest(e: WireError): BadRequest {
  const d = (e.details ?? []).find((x) => x.type === "google.rpc.BadRequest");
  assert.ok(d, `no BadRequest detail in ${JSON.stringify(e)}`);
  return fromBinary(BadRequestSchema, Buffer.from(d.value, "base64"));
}

/** Sends raw bytes over one TCP connection and returns what came back until it closed (or 5 s). */
function rawHttp1(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(request));
    let out = "";
    socket.setTimeout(5000, () => socket.destroy());
    socket.on("data", (d) => {
      out += d.toString("latin1");
      if (/\r\n\r\n/.test(out) && !/^HTTP\/1\.1 101/.test(out)) socket.end();
    });
    socket.on("close", () => resolve(out));
    socket.on("error", reject);
  });
}

const fieldsOf = (e: WireError) => badRequest(e).fieldViolations.map((v) => v.field);

describe("bad input over the wire", () => {
  let s: TestServer;
  /** Names of every VM a call here created successfully. */
  const created: string[] = [];

  async function createOk(msg: Record<string, unknown>): Promise<void> {
    const r = await call(s.url, "CreateVM", msg);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((r.body as { name: string }).name, msg["name"]);
    created.push(msg["name"] as string);
  }

  async function countVms(): Promise<{ total: number; names: string[] }> {
    const r = await call(s.url, "ListVMs", { projectId: PROJECT, pageSize: 1000 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const b = r.body as { vms?: { name: string }[]; totalCount?: number };
    return { total: b.totalCount ?? 0, names: (b.vms ?? []).map((v) => v.name).sort() };
  }

  before(async () => {
    s = await startTestServer({ demo: false });
  });
  after(() => s.close());

  it("malformed JSON is invalid_argument", async () => {
    const e = expectError(await post(s.url, `${VMS}/CreateVM`, '{"name": "x", spec: '), 400, "invalid_argument");
    assert.match(e.message, /JSON/);
  });

  it("a content type the server does not speak is 415", async () => {
    const r = await post(s.url, `${VMS}/CreateVM`, JSON.stringify({ name: "plain", spec: SPEC }), "text/plain");
    assert.equal(r.status, 415);
  });

  it("an unknown field is invalid_argument naming the field", async () => {
    const e = expectError(await call(s.url, "CreateVM", { name: "unknown-field", bogus: 1, spec: SPEC }), 400, "invalid_argument");
    assert.match(e.message, /bogus/);
  });

  it("a body over the default 4 MiB limit is resource_exhausted", async () => {
    const body = JSON.stringify({ name: "huge", description: "a".repeat(4 * 1024 * 1024 + 1), spec: SPEC });
    const e = expectError(await post(s.url, `${VMS}/CreateVM`, body), 429, "resource_exhausted");
    assert.match(e.message, /readMaxBytes|larger/);
  });

  it("page_size 5000 is invalid_argument with a BadRequest detail naming page_size", async () => {
    const e = expectError(await call(s.url, "ListVMs", { pageSize: 5000 }), 400, "invalid_argument");
    assert.deepEqual(fieldsOf(e), ["page_size"]);
  });

  it("a garbage page_token is invalid_argument naming page_token", async () => {
    for (const token of ["garbage!!", "bm90LWEtdG9rZW4", "eyJ2IjoxfQ"]) {
      const e = expectError(await call(s.url, "ListVMs", { pageToken: token }), 400, "invalid_argument");
      assert.deepEqual(fieldsOf(e), ["page_token"], token);
    }
  });

  it("reports every violation of a CreateVM in one error", async () => {
    const msg = { name: "1bad", spec: { cpu: { cores: 0 }, memory: { sizeMib: "100" }, disks: [{ id: "root", sizeGib: "0" }] } };
    const e = expectError(await call(s.url, "CreateVM", msg), 400, "invalid_argument");
    const fields = fieldsOf(e);
    for (const f of ["name", "spec.cpu.cores", "spec.memory.size_mib", "spec.disks[0].size_gib"]) {
      assert.ok(fields.includes(f), `${f} missing from ${JSON.stringify(fields)}`);
      assert.ok(e.message.includes(f), `${f} missing from the message`);
    }
  });

  it("accepts the limits and rejects one past them", async () => {
    await createOk({ name: "cores-256", spec: { cpu: { cores: 256 }, memory: { sizeMib: "512" } } });
    let e = expectError(await call(s.url, "CreateVM", { name: "cores-257", spec: { cpu: { cores: 257 }, memory: { sizeMib: "512" } } }), 400, "invalid_argument");
    assert.deepEqual(fieldsOf(e), ["spec.cpu.cores"]);

    await createOk({ name: "mem-256", spec: { cpu: { cores: 1 }, memory: { sizeMib: "256" } } });
    e = expectError(await call(s.url, "CreateVM", { name: "mem-255", spec: { cpu: { cores: 1 }, memory: { sizeMib: "255" } } }), 400, "invalid_argument");
    assert.deepEqual(fieldsOf(e), ["spec.memory.size_mib"]);

    const labels = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`key-${i}`, `value-${i}`]));
    await createOk({ name: "labels-50", labels: labels(50), spec: SPEC });
    e = expectError(await call(s.url, "CreateVM", { name: "labels-51", labels: labels(51), spec: SPEC }), 400, "invalid_argument");
    assert.deepEqual(fieldsOf(e), ["labels"]);
  });

  it("a second VM with the same name in the project is already_exists", async () => {
    await createOk({ name: "twin", projectId: PROJECT, spec: SPEC });
    const e = expectError(await call(s.url, "CreateVM", { name: "twin", projectId: PROJECT, spec: SPEC }), 409, "already_exists");
    assert.match(e.message, /twin/);
  });

  it("GetVM of an unknown id is not_found naming the id", async () => {
    const id = "99999999-9999-9999-9999-999999999999";
    const e = expectError(await call(s.url, "GetVM", { id }), 404, "not_found");
    assert.ok(e.message.includes(id), e.message);
  });

  it("RPCs not built yet are unimplemented and say so", async () => {
    // Every service of the contract is served now; a service a later issue adds is listed
    // in PENDING_SERVICES and answered by unimplementedImpl, which says what brings it.
    const impl = unimplementedImpl(MemoryGateway, "a later issue") as unknown as { listNodes: () => Promise<unknown> };
    await assert.rejects(impl.listNodes(), (e: QuantixError) => e.code === "unimplemented" && /virtualdom\.v1\.MemoryGateway\/ListNodes is not implemented yet: it arrives with a later issue/.test(e.message));
    // And the MemoryGateway itself now answers (an empty list, not UNIMPLEMENTED).
    const res = await post(s.url, "/virtualdom.v1.MemoryGateway/ListNodes", "{}");
    assert.equal(res.status, 200);
  });

  it("vmm.v1.VmService is unimplemented here and the message says the host agent serves it", async () => {
    const e = expectError(await post(s.url, "/vmm.v1.VmService/ListVms", "{}"), 501, "unimplemented");
    assert.doesNotMatch(e.message, /arrives with|host agent issue/);
    assert.match(e.message, /not served by the control plane: each host's agent serves it \(`npm run agent`, on port 9090/);
    assert.match(e.message, /spec\.agent_endpoint/);
  });

  it("odd request targets get an answer (never a 5xx) over HTTP/1.1, h2 and an upgrade, and the server keeps serving", async () => {
    // `//` once reached `new URL(target, base)` in the console's doors, which threw out of
    // the request handler and ended the process (the bench's fuzz run found it).
    const { port } = new URL(s.url);
    for (const target of ["//", "//x/v1/vms/a/console", "///v1/vms/a/console", "*", "http://x/v1/vms/a/console"]) {
      const h1 = await rawHttp1(Number(port), `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      // The dashboard's client routes may answer its page; what matters is an answer, not a crash.
      assert.match(h1, /^HTTP\/1\.1 [234]\d\d /, `GET ${target}: ${h1.slice(0, 80)}`);
      const up = await rawHttp1(Number(port), `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
      assert.match(up, /^HTTP\/1\.1 (404|400) /, `upgrade ${target}: ${up.slice(0, 80)}`);
    }
    const session = http2.connect(s.url);
    try {
      for (const path of ["//", "//x/v1/vms/a/console"]) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = session.request({ ":path": path, ":method": "GET" });
          req.on("response", (h) => resolve(Number(h[":status"])));
          req.on("error", reject);
          req.resume();
          req.end();
        });
        assert.ok(status >= 200 && status < 500, `h2 ${path}: ${status}`);
      }
    } finally {
      session.close();
    }
    assert.equal((await fetch(`${s.url}/_/health`)).status, 200);
  });

  it("still serves, and holds exactly the VMs the successful creates made", async () => {
    const { total, names } = await countVms();
    assert.equal(created.length, 4);
    assert.equal(total, created.length);
    assert.deepEqual(names, [...created].sort());
  });
});

describe("a small QUANTIX_MAX_REQUEST_BYTES", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false, maxRequestBytes: 2048 });
  });
  after(() => s.close());

  it("rejects a larger body with resource_exhausted, creates nothing and keeps serving", async () => {
    const e = expectError(await call(s.url, "CreateVM", { name: "big", description: "d".repeat(4096), spec: SPEC }), 429, "resource_exhausted");
    assert.match(e.message, /2048/);
    const ok = await call(s.url, "CreateVM", { name: "small", description: "d".repeat(512), spec: SPEC });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const list = await call(s.url, "ListVMs", {});
    assert.deepEqual(((list.body as { vms: { name: string }[] }).vms ?? []).map((v) => v.name), ["small"]);
  });
});
