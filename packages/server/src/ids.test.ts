import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { create, toBinary, type DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { MigrationService } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_service_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { GetVMRequestSchema, StartVMRequestSchema, VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { EventService } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import { encodePageToken } from "@quantix/core";
import { rejection, startPostgres, startTestServer, type TestPostgres, type TestServer } from "@quantix/testing";
import type { StoreConfig } from "./config.js";
import { fingerprintOf } from "./services/paging.js";

// Ids have a format (docs/api/resources.md): every id a request carries is checked before
// it reaches a store, on every store, and a malformed one is INVALID_ARGUMENT naming its
// field. A NUL byte used to reach the SQL stores (INTERNAL); a well-formed unknown id is
// NOT_FOUND naming it.

const NUL = "vm\u0000x";
const WEB = "11111111-1111-1111-1111-111111111111";
const UNKNOWN = "99999999-9999-9999-9999-999999999999";

/** A page token of ListVMs {} that is well signed but carries a NUL id: what a forger can make. */
const forgedToken = encodePageToken({ field: "name", desc: false }, fingerprintOf({ where: {}, labels: undefined }), { key: "web", id: NUL });

/** One request with a malformed id: the service, the method, the request, the field path the error must name. */
type Case = readonly [DescService, string, Record<string, unknown>, string];

const MALFORMED: readonly Case[] = [
  [VMService, "getVM", { id: NUL }, "id"],
  [VMService, "startVM", { id: NUL }, "id"],
  [VMService, "stopVM", { id: NUL }, "id"],
  [VMService, "deleteVM", { id: NUL }, "id"],
  [VMService, "updateVM", { id: NUL, description: "x", updateMask: { paths: ["description"] } }, "id"],
  [VMService, "listVMs", { nodeId: NUL }, "node_id"],
  [VMService, "listVMs", { projectId: NUL }, "project_id"],
  [VMService, "listVMs", { labels: { env: "a\u0000b" } }, 'labels["env"]'],
  [VMService, "listVMs", { pageToken: forgedToken }, "page_token"],
  [VMService, "createVM", { name: "nul-node", nodeId: NUL, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } }, "node_id"],
  [VMService, "migrateVM", { vmId: NUL }, "vm_id"],
  [VMService, "migrateVM", { vmId: WEB, targetNodeId: NUL }, "target_node_id"],
  [VMService, "getConsoleOutput", { vmId: NUL }, "vm_id"],
  [VMService, "watchVM", { vmId: NUL }, "vm_id"],
  [VMService, "watchVMs", { nodeId: NUL }, "node_id"],
  [VMService, "streamMetrics", { vmId: NUL }, "vm_id"],
  [NodeService, "getNode", { id: NUL }, "id"],
  [NodeService, "updateHeartbeat", { id: NUL }, "id"],
  [NodeService, "enableNode", { id: NUL }, "id"],
  [NodeService, "drainNode", { id: NUL }, "id"],
  [NodeService, "getNodeMetrics", { id: NUL }, "id"],
  [MigrationService, "getMigration", { id: NUL }, "id"],
  [MigrationService, "cancelMigration", { id: NUL }, "id"],
  [MigrationService, "listMigrations", { vmId: NUL }, "vm_id"],
  [EventService, "listEvents", { objectId: NUL }, "object_id"],
  [EventService, "listEvents", { objectKind: "VM\u0000" }, "object_kind"],
  [EventService, "watchEvents", { objectId: NUL }, "object_id"],
];

/** Well-formed ids that name nothing: NOT_FOUND naming the id. */
const UNKNOWN_IDS: readonly (readonly [DescService, string, Record<string, unknown>])[] = [
  [VMService, "getVM", { id: UNKNOWN }],
  [VMService, "startVM", { id: UNKNOWN }],
  [VMService, "watchVM", { vmId: UNKNOWN }],
  [NodeService, "getNode", { id: UNKNOWN }],
  [NodeService, "updateHeartbeat", { id: UNKNOWN }],
  [MigrationService, "cancelMigration", { id: UNKNOWN }],
];

/** Calls a method by its local name; a streaming one is read to its end. */
async function call(transport: Transport, service: DescService, method: string, req: Record<string, unknown>): Promise<void> {
  const client = createClient(service, transport) as unknown as Record<string, (r: unknown, o: unknown) => unknown>;
  const m = service.methods.find((x) => x.localName === method)!;
  const signal = AbortSignal.timeout(5000);
  if (m.methodKind === "server_streaming") {
    for await (const _ of client[method]!(req, { signal }) as AsyncIterable<unknown>) break;
    return;
  }
  await client[method]!(req, { signal });
}

/** The test servers: one per store, each with the demo data. */
const stores: { name: string; open(): Promise<{ store: StoreConfig; close(): Promise<void> }> }[] = [
  { name: "memory", open: async () => ({ store: { kind: "memory" }, close: async () => undefined }) },
  {
    name: "embedded",
    open: async () => {
      const dir = mkdtempSync(join(tmpdir(), "quantix-ids-"));
      return { store: { kind: "embedded", dataDir: dir }, close: async () => rmSync(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: "PostgreSQL",
    open: async () => {
      const pg: TestPostgres = await startPostgres();
      return { store: { kind: "postgres", url: await pg.createDatabase("ids") }, close: () => pg.stop() };
    },
  },
];

for (const { name, open } of stores) {
  describe(`ids on the ${name} store`, () => {
    let s: TestServer;
    let closeStore: () => Promise<void>;
    let transport: Transport;
    before(async () => {
      const o = await open();
      closeStore = o.close;
      s = await startTestServer({ store: o.store });
      transport = createConnectTransport({ baseUrl: s.url, httpVersion: "1.1" });
    });
    after(async () => {
      await s?.close();
      await closeStore?.();
    });

    test("a malformed id (a NUL byte) is INVALID_ARGUMENT naming its field, whatever the RPC", async () => {
      for (const [service, method, req, field] of MALFORMED) {
        const what = `${service.name}.${method} ${field}`;
        const err = await rejection(call(transport, service, method, req));
        assert.equal(err.code, Code.InvalidArgument, `${what}: ${err.message}`);
        const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
        assert.ok(fields.includes(field), `${what}: violations ${JSON.stringify(fields)}`);
        assert.ok(!err.rawMessage.includes("\u0000"), `${what}: the message echoes a NUL`);
      }
    });

    test("a well-formed unknown id is NOT_FOUND naming it", async () => {
      for (const [service, method, req] of UNKNOWN_IDS) {
        const err = await rejection(call(transport, service, method, req));
        assert.equal(err.code, Code.NotFound, `${service.name}.${method}: ${err.message}`);
        assert.ok(err.rawMessage.includes(UNKNOWN), `${service.name}.${method}: ${err.rawMessage}`);
      }
    });

    test("still serves what exists", async () => {
      const vm = await s.vms.getVM({ id: WEB });
      assert.equal(vm.id, WEB);
    });
  });
}

const HUGE = "x".repeat(100 * 1024);
const root = fileURLToPath(new URL("../../../", import.meta.url));

/** One gRPC call over a node:http2 session: the response's headers and trailers, and the time it took. */
async function rawGrpc(session: ClientHttp2Session, path: string, message: Uint8Array): Promise<{ headers: IncomingHttpHeaders; trailers: IncomingHttpHeaders; ms: number }> {
  const t0 = performance.now();
  const body = Buffer.alloc(5 + message.length);
  body.writeUInt32BE(message.length, 1);
  body.set(message, 5);
  const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
  req.end(body);
  return new Promise((resolve, reject) => {
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    req.on("response", (h) => (headers = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("data", () => undefined);
    req.on("error", reject);
    req.on("close", () => (req.rstCode === 0 ? resolve({ headers, trailers, ms: performance.now() - t0 }) : reject(new Error(`stream reset with code ${req.rstCode}`))));
  });
}

describe("a 100 KiB id", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s?.close());

  test("over raw HTTP/2: INVALID_ARGUMENT at once, a bounded grpc-message, and the connection keeps serving", async () => {
    const session = connect(s.url);
    let goaway = false;
    session.on("goaway", () => (goaway = true));
    session.on("error", () => undefined);
    try {
      for (const path of ["/Quantixkvm.compute.v1.VMService/StartVM", "/Quantixkvm.compute.v1.VMService/GetVM"]) {
        const r = await rawGrpc(session, path, toBinary(StartVMRequestSchema, create(StartVMRequestSchema, { id: HUGE })));
        const status = r.trailers["grpc-status"] ?? r.headers["grpc-status"];
        const message = String(r.trailers["grpc-message"] ?? r.headers["grpc-message"] ?? "");
        assert.equal(status, String(Code.InvalidArgument), `${path}: ${message.slice(0, 200)}`);
        assert.ok(message.length < 1024, `${path}: grpc-message of ${message.length} bytes`);
        assert.ok(r.ms < 2000, `${path}: answered in ${r.ms} ms`);
      }
      const ok = await rawGrpc(session, "/Quantixkvm.compute.v1.VMService/GetVM", toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id: WEB })));
      assert.equal(ok.trailers["grpc-status"], "0");
      assert.equal(goaway, false, "the server sent GOAWAY");
      assert.equal(session.destroyed, false);
    } finally {
      session.close();
    }
  });

  test("with a real @grpc/grpc-js client: INVALID_ARGUMENT, then the same channel serves the next call", async () => {
    const def = protoLoader.loadSync("Quantixkvm/compute/v1/vm_service.proto", { includeDirs: [`${root}proto`, `${root}third_party/proto`], longs: String, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { Quantixkvm: { compute: { v1: { VMService: grpc.ServiceClientConstructor } } } };
    const client = new pkg.Quantixkvm.compute.v1.VMService(`127.0.0.1:${s.cp.port}`, grpc.credentials.createInsecure());
    const unary = (method: string, req: object) =>
      new Promise<{ err: grpc.ServiceError | null; ms: number }>((resolve) => {
        const t0 = performance.now();
        client[method]!(req, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) => resolve({ err, ms: performance.now() - t0 }));
      });
    try {
      for (const method of ["StartVM", "StopVM", "GetVM"]) {
        const { err, ms } = await unary(method, { id: HUGE });
        assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, `${method}: ${err?.code} ${err?.details?.slice(0, 200)}`);
        assert.ok(ms < 2000, `${method}: answered in ${ms} ms`);
      }
      const { err } = await unary("GetVM", { id: WEB });
      assert.equal(err, null);
      assert.equal(client.getChannel().getConnectivityState(false), grpc.connectivityState.READY);
    } finally {
      client.close();
    }
  });
});
