import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createContextKey, type Interceptor, type Transport } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { GetNodeRequestSchema, NodeService, NodeUpdateSchema, WatchNodesRequestSchema, type NodeUpdate } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { PushIterable } from "@quantix/core";
import { parsePrometheus, sampleValue } from "@quantix/testing";
import { peerKey, route, RpcMetrics, servedByFastPath, startRpcServer, type Logger, type RpcServer } from "./index.js";

// One Interceptor[] runs on every path: interceptors added to the server (here a guard
// that refuses calls carrying a header, as an authentication interceptor would, behind one
// that copies the request) see and can refuse unary and server-streaming calls on Connect
// JSON (HTTP/1.1), Connect binary (h2c) (both on the Connect fast path), gRPC-Web, gRPC from @grpc/grpc-js (the fast path)
// and compressed gRPC (which the fast path leaves to the Connect router); what they refuse
// is logged and counted.

const DENY = "x-test-deny";
const user = createContextKey("nobody", { description: "who the guard let in" });
const seen: { method: string; stream: boolean; fast: boolean; peer: string }[] = [];
const guard: Interceptor = (next) => async (req) => {
  // The peer is the transport's: the loopback client's address, on every path.
  seen.push({ method: req.method.name, stream: req.stream, fast: req.contextValues.get(servedByFastPath), peer: req.contextValues.get(peerKey).address });
  if (req.header.get(DENY) === "yes") throw new ConnectError("the guard refuses this caller", Code.PermissionDenied);
  req.contextValues.set(user, req.header.get("x-test-user") ?? "anonymous");
  const res = await next(req);
  res.header.set("x-test-guard", "passed");
  return res;
};
// Copies the request, as interceptors that replace a part do: the copy must carry every part to those inside it.
const copier: Interceptor = (next) => (req) => next({ ...req });

let implCalls = 0;
const nodes = route(NodeService, {
  getNode: (req, ctx) => {
    implCalls++;
    return create(NodeSchema, { id: req.id, hostname: ctx.values.get(user) });
  },
  // A push source, as the stores' watches are: the fast path pipes it through every interceptor's wrapper.
  watchNodes: (_req, ctx) => {
    implCalls++;
    const who = ctx.values.get(user);
    return new PushIterable<NodeUpdate>((sink) => {
      const t = setImmediate(() => {
        sink.push([1, 2].map((n) => create(NodeUpdateSchema, { type: EventType.ADDED, node: { id: `n${n}`, hostname: who } })));
        sink.push([create(NodeUpdateSchema, { type: EventType.SYNCED })]);
        sink.end();
      });
      return () => clearImmediate(t);
    });
  },
});

const lines: Record<string, unknown>[] = [];
const log: Logger = { log: (_level, msg, fields) => msg === "rpc" && lines.push(fields ?? {}) };
const metrics = new RpcMetrics();
let server: RpcServer;
before(async () => {
  server = await startRpcServer({ host: "127.0.0.1", port: 0, routes: [nodes], log, metrics, interceptors: [copier, guard] });
});
after(() => server.close(1000));

/** A client of one protocol: a unary call and a whole server stream, with request headers. */
interface Caller {
  /** Whether the unary call is served by a fast path; `fastStream` the same for the server stream. */
  readonly fast: boolean;
  readonly fastStream?: boolean;
  getNode(id: string, headers: Record<string, string>): Promise<{ id: string; hostname: string; guard: string | null }>;
  watchNodes(headers: Record<string, string>): Promise<{ updates: { hostname: string; type: EventType }[]; guard: string | null }>;
}

function connectCaller(transport: () => Transport, fast: boolean, fastStream = fast): Caller {
  return {
    fast,
    fastStream,
    async getNode(id, headers) {
      let guard: string | null = null;
      const node = await createClient(NodeService, transport()).getNode({ id }, { headers, onHeader: (h) => (guard = h.get("x-test-guard")) });
      return { id: node.id, hostname: node.hostname, guard };
    },
    async watchNodes(headers) {
      let guard: string | null = null;
      const updates = [];
      for await (const u of createClient(NodeService, transport()).watchNodes({}, { headers, onHeader: (h) => (guard = h.get("x-test-guard")) })) updates.push({ hostname: u.node?.hostname ?? "", type: u.type });
      return { updates, guard };
    },
  };
}

function method<I extends DescMessage, O extends DescMessage>(path: string, input: I, output: O, responseStream: boolean): grpc.MethodDefinition<MessageShape<I>, MessageShape<O>> {
  return {
    path: `/Quantixkvm.compute.v1.NodeService/${path}`,
    requestStream: false,
    responseStream,
    requestSerialize: (m) => Buffer.from(toBinary(input, m)),
    requestDeserialize: (b) => fromBinary(input, b),
    responseSerialize: (m) => Buffer.from(toBinary(output, m)),
    responseDeserialize: (b) => fromBinary(output, b),
  };
}

/** A real @grpc/grpc-js client, its messages encoded by protobuf-es. */
function grpcJsCaller(): Caller {
  const Client = grpc.makeGenericClientConstructor(
    { GetNode: method("GetNode", GetNodeRequestSchema, NodeSchema, false), WatchNodes: method("WatchNodes", WatchNodesRequestSchema, NodeUpdateSchema, true) },
    "NodeService",
  );
  const metadata = (headers: Record<string, string>) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    return md;
  };
  const call = <T>(f: (c: grpc.Client & Record<string, (...a: unknown[]) => unknown>) => Promise<T>): Promise<T> => {
    const c = new Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
    return f(c).finally(() => c.close());
  };
  const asConnect = (e: grpc.ServiceError) => new ConnectError(e.details, e.code as number as Code);
  const guardOf = (md: grpc.Metadata) => (md.get("x-test-guard")[0] as string | undefined) ?? null;
  return {
    fast: true,
    getNode: (id, headers) =>
      call(
        (c) =>
          new Promise((resolve, reject) => {
            let guard: string | null = null;
            const unary = c["GetNode"]!(create(GetNodeRequestSchema, { id }), metadata(headers), (e: grpc.ServiceError | null, res: { id: string; hostname: string }) => (e ? reject(asConnect(e)) : resolve({ id: res.id, hostname: res.hostname, guard }))) as grpc.ClientUnaryCall;
            unary.on("metadata", (md: grpc.Metadata) => (guard = guardOf(md)));
          }),
      ),
    watchNodes: (headers) =>
      call(
        (c) =>
          new Promise((resolve, reject) => {
            let guard: string | null = null;
            const updates: { hostname: string; type: EventType }[] = [];
            const s = c["WatchNodes"]!(create(WatchNodesRequestSchema), metadata(headers)) as grpc.ClientReadableStream<NodeUpdate>;
            s.on("metadata", (md: grpc.Metadata) => (guard = guardOf(md)));
            s.on("data", (u: NodeUpdate) => updates.push({ hostname: u.node?.hostname ?? "", type: u.type }));
            s.on("error", (e: grpc.ServiceError) => reject(asConnect(e)));
            s.on("end", () => resolve({ updates, guard }));
          }),
      ),
  };
}

const url = () => server.url;
const protocols: Record<string, () => Caller> = {
  // Connect calls, unary and server-streaming, take the Connect fast path.
  "Connect JSON over HTTP/1.1": () => connectCaller(() => createConnectTransport({ baseUrl: url(), httpVersion: "1.1" }), true),
  "Connect binary over h2c": () => connectCaller(() => createConnectTransport({ baseUrl: url(), httpVersion: "2", useBinaryFormat: true }), true),
  "gRPC-Web over HTTP/1.1": () => connectCaller(() => createGrpcWebTransport({ baseUrl: url(), httpVersion: "1.1" }), false),
  "gRPC from @grpc/grpc-js (the fast path)": grpcJsCaller,
  "gRPC with a gzip-compressed request (the Connect router)": () => connectCaller(() => createGrpcTransport({ baseUrl: url(), sendCompression: compressionGzip, compressMinBytes: 0 }), false),
};

async function refusal(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("the call succeeded");
}

const calls = (method: string, code: string) => lines.filter((l) => l["procedure"] === `Quantixkvm.compute.v1.NodeService/${method}` && l["code"] === code).length;

for (const [name, make] of Object.entries(protocols)) {
  describe(name, () => {
    test("unary: the added interceptors run (one copies the request), their context value and response header get through, and one can refuse the call", async () => {
      const caller = make();
      seen.length = 0;
      const node = await caller.getNode("n-1", { "x-test-user": "alice" });
      assert.deepEqual([node.id, node.hostname, node.guard], ["n-1", "alice", "passed"]);
      assert.deepEqual(seen, [{ method: "GetNode", stream: false, fast: caller.fast, peer: "127.0.0.1" }]);

      const [before, deniedBefore] = [implCalls, calls("GetNode", "permission_denied")];
      const err = await refusal(caller.getNode("n-1", { [DENY]: "yes" }));
      assert.equal(err.code, Code.PermissionDenied);
      assert.equal(err.rawMessage, "the guard refuses this caller");
      assert.equal(implCalls, before, "the implementation never ran");
      // The guard runs inside the log line and the metrics: the refusal is on record.
      assert.equal(calls("GetNode", "permission_denied"), deniedBefore + 1);
    });

    test("server streaming: the added interceptors run (one copies the request), their context value and response header get through, and one can refuse the call", async () => {
      const caller = make();
      seen.length = 0;
      const { updates, guard } = await caller.watchNodes({ "x-test-user": "bob" });
      assert.deepEqual(updates.map((u) => [EventType[u.type], u.hostname]), [["ADDED", "bob"], ["ADDED", "bob"], ["SYNCED", ""]]);
      assert.equal(guard, "passed");
      assert.deepEqual(seen, [{ method: "WatchNodes", stream: true, fast: caller.fastStream ?? caller.fast, peer: "127.0.0.1" }]);

      const [before, deniedBefore] = [implCalls, calls("WatchNodes", "permission_denied")];
      const err = await refusal(caller.watchNodes({ [DENY]: "yes" }));
      assert.equal(err.code, Code.PermissionDenied);
      assert.equal(err.rawMessage, "the guard refuses this caller");
      assert.equal(implCalls, before, "the implementation never ran");
      assert.equal(calls("WatchNodes", "permission_denied"), deniedBefore + 1);
    });
  });
}

test("every call above is logged once and counted: 5 protocols, each an allowed and a refused call per method", async () => {
  for (const m of ["GetNode", "WatchNodes"]) {
    assert.equal(calls(m, "ok"), 5, m);
    assert.equal(calls(m, "permission_denied"), 5, m);
  }
  const streams = lines.filter((l) => l["procedure"] === "Quantixkvm.compute.v1.NodeService/WatchNodes" && l["code"] === "ok");
  assert.ok(streams.every((l) => l["messages"] === 3), JSON.stringify(streams));
  const e = parsePrometheus(await metrics.registry.metrics());
  for (const m of ["GetNode", "WatchNodes"]) {
    for (const code of ["ok", "permission_denied"]) assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: `Quantixkvm.compute.v1.NodeService/${m}`, code }), 5, `${m} ${code}`);
  }
  assert.equal(sampleValue(e, "quantix_rpc_streams_open", { procedure: "Quantixkvm.compute.v1.NodeService/WatchNodes" }), 0);
});
