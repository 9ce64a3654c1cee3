import assert from "node:assert/strict";
import * as https from "node:https";
import * as tls from "node:tls";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { NodeSchema, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { GetNodeRequestSchema, NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { nodeIdOfSubjectAltName } from "@quantix/core";
import { createTestPki, grpcJsUnary, until, type TestPki } from "@quantix/testing";
import { peerKey, route, servedByFastPath, silentLogger, startRpcServer, type KeyAndCert, type RpcServer } from "./index.js";

// TLS on the one port (docs/adr/0002-*.md): HTTP/2 (ALPN h2) and HTTP/1.1 with every
// protocol, the gRPC fast path included, and the verified client certificate in every
// call's peer. Real clients over real TLS on loopback.

/** Answers GetNode with who called (the node a verified client certificate names, else "anonymous") and which path served it. */
const whoAmI = route(NodeService, {
  getNode: (_req, ctx) => {
    const peer = ctx.values.get(peerKey);
    return create(NodeSchema, { id: ctx.values.get(servedByFastPath) ? "fast" : "router", hostname: nodeIdOfSubjectAltName(peer.certificate?.subjectaltname) ?? "anonymous" });
  },
});

let pki: TestPki;
let agentCert: KeyAndCert;
let foreign: KeyAndCert;

before(async () => {
  pki = await createTestPki();
  agentCert = await pki.node("node-a");
  foreign = await (await createTestPki("another CA")).node("node-a");
});

function start(clientCert: "optional" | "required", limits = {}): Promise<RpcServer> {
  return startRpcServer({ host: "127.0.0.1", port: 0, routes: [whoAmI], log: silentLogger, limits, tls: { cert: pki.server.certPem, key: pki.server.keyPem, clientCa: pki.ca.certPem, clientCert } });
}

type Client = { ca: string; cert?: KeyAndCert };
const tlsOf = (c: Client) => ({ ca: c.ca, ...(c.cert ? { cert: c.cert.certPem, key: c.cert.keyPem } : {}) });

const transports: Record<string, (url: string, c: Client) => Transport> = {
  "Connect JSON over HTTP/1.1": (url, c) => createConnectTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: tlsOf(c) }),
  "Connect binary over HTTP/2": (url, c) => createConnectTransport({ baseUrl: url, httpVersion: "2", useBinaryFormat: true, nodeOptions: tlsOf(c) }),
  "gRPC-Web over HTTP/1.1": (url, c) => createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: tlsOf(c) }),
  "gRPC-Web over HTTP/2": (url, c) => createGrpcWebTransport({ baseUrl: url, httpVersion: "2", nodeOptions: tlsOf(c) }),
  "gRPC (connect-node)": (url, c) => createGrpcTransport({ baseUrl: url, nodeOptions: tlsOf(c) }),
};

async function connectCall(name: string, url: string, c: Client): Promise<Node> {
  return createClient(NodeService, transports[name]!(url, c)).getNode({ id: "x" }, { timeoutMs: 5000 });
}

/** A unary GetNode from @grpc/grpc-js over TLS (grpc.credentials.createSsl): the fast path. */
function grpcJsCall(port: number, c: Client): Promise<Node> {
  const creds = grpc.credentials.createSsl(Buffer.from(c.ca), c.cert ? Buffer.from(c.cert.keyPem) : null, c.cert ? Buffer.from(c.cert.certPem) : null);
  return grpcJsUnary(`127.0.0.1:${port}`, creds, "/Quantixkvm.compute.v1.NodeService/GetNode", GetNodeRequestSchema, NodeSchema, { id: "x" });
}

/** A plain HTTP/1.1 POST of Connect JSON over node:https, as curl sends it. */
function httpsJson(url: string, c: Client): Promise<{ status: number; body: string; alpn: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${url}/Quantixkvm.compute.v1.NodeService/GetNode`, { method: "POST", headers: { "content-type": "application/json" }, ...tlsOf(c), agent: false }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, alpn: String((res.socket as tls.TLSSocket).alpnProtocol) }));
    });
    req.on("error", reject);
    req.end(JSON.stringify({ id: "x" }));
  });
}

describe("a TLS server with optional client certificates", () => {
  let server: RpcServer;
  before(async () => {
    server = await start("optional");
  });
  after(() => server.close(1000));

  test("its URL is https", () => assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/));

  for (const name of Object.keys(transports)) {
    test(`${name}: a client certificate of the CA is the call's peer; without one the call is anonymous`, async () => {
      const withCert = await connectCall(name, server.url, { ca: pki.ca.certPem, cert: agentCert });
      assert.equal(withCert.hostname, "node-a");
      const without = await connectCall(name, server.url, { ca: pki.ca.certPem });
      assert.equal(without.hostname, "anonymous");
    });
  }

  test("gRPC from @grpc/grpc-js is served by the fast path over TLS h2, with the certificate as the peer", async () => {
    const withCert = await grpcJsCall(server.port, { ca: pki.ca.certPem, cert: agentCert });
    assert.deepEqual([withCert.id, withCert.hostname], ["fast", "node-a"]);
    const without = await grpcJsCall(server.port, { ca: pki.ca.certPem });
    assert.deepEqual([without.id, without.hostname], ["fast", "anonymous"]);
  });

  test("the Connect fast path serves unary Connect calls over TLS, HTTP/2 and HTTP/1.1, with the certificate as the peer", async () => {
    for (const name of ["Connect binary over HTTP/2", "Connect JSON over HTTP/1.1"]) {
      const n = await connectCall(name, server.url, { ca: pki.ca.certPem, cert: agentCert });
      assert.deepEqual([n.id, n.hostname], ["fast", "node-a"], name);
    }
  });

  test("the Connect router serves the other protocols (the peer is set there too)", async () => {
    const n = await connectCall("gRPC-Web over HTTP/2", server.url, { ca: pki.ca.certPem, cert: agentCert });
    assert.deepEqual([n.id, n.hostname], ["router", "node-a"]);
  });

  test("HTTP/1.1 over TLS without ALPN (node:https, as curl --http1.1)", async () => {
    const r = await httpsJson(server.url, { ca: pki.ca.certPem, cert: agentCert });
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).hostname, "node-a");
    assert.equal(r.alpn, "false");
  });

  test("a client certificate of another CA is not a peer certificate: the call is anonymous", async () => {
    const n = await connectCall("Connect binary over HTTP/2", server.url, { ca: pki.ca.certPem, cert: foreign });
    assert.equal(n.hostname, "anonymous");
    const g = await grpcJsCall(server.port, { ca: pki.ca.certPem, cert: foreign });
    assert.equal(g.hostname, "anonymous");
  });

  test("a client that does not trust the cluster CA refuses the server", async () => {
    const other = await createTestPki("not ours");
    await assert.rejects(connectCall("Connect JSON over HTTP/1.1", server.url, { ca: other.ca.certPem }));
    await assert.rejects(grpcJsCall(server.port, { ca: other.ca.certPem }));
    await assert.rejects(httpsJson(server.url, { ca: other.ca.certPem }));
  });
});

describe("a TLS server that requires client certificates", () => {
  let server: RpcServer;
  before(async () => {
    server = await start("required");
  });
  after(() => server.close(1000));

  test("a certificate of the CA is let in, on every path", async () => {
    assert.equal((await grpcJsCall(server.port, { ca: pki.ca.certPem, cert: agentCert })).hostname, "node-a");
    assert.equal((await connectCall("gRPC-Web over HTTP/1.1", server.url, { ca: pki.ca.certPem, cert: agentCert })).hostname, "node-a");
  });

  test("no certificate, or one of another CA, fails the handshake on every path", async () => {
    for (const c of [{ ca: pki.ca.certPem }, { ca: pki.ca.certPem, cert: foreign }]) {
      await assert.rejects(grpcJsCall(server.port, c));
      await assert.rejects(httpsJson(server.url, c));
      for (const name of Object.keys(transports)) await assert.rejects(connectCall(name, server.url, c), `${name} was let in`);
    }
  });
});

describe("the listener's limits over TLS", () => {
  test("one source gets no more connections than its limit; a connection that never handshakes is closed", async () => {
    const server = await start("optional", { maxConnectionsPerSource: 2, headersTimeoutMs: 300 });
    try {
      const open = () =>
        new Promise<tls.TLSSocket>((resolve, reject) => {
          const s = tls.connect({ host: "127.0.0.1", port: server.port, ca: pki.ca.certPem, ALPNProtocols: ["h2"] }, () => resolve(s));
          s.on("error", reject);
        });
      const held = [await open(), await open()];
      await assert.rejects(open(), "the third connection from one address is refused");
      for (const s of held) s.destroy();
      // A TCP connection that never starts the handshake is closed after headersTimeoutMs.
      const net = await import("node:net");
      const silent = net.connect(server.port, "127.0.0.1");
      silent.on("error", () => undefined);
      let closed = false;
      silent.on("close", () => (closed = true));
      await until(() => (closed ? true : undefined), "the silent connection to be closed", 5000);
    } finally {
      await server.close(1000);
    }
  });

  test("close() ends with open TLS connections (HTTP/1.1 keep-alive and HTTP/2)", async () => {
    const server = await start("optional");
    await connectCall("Connect JSON over HTTP/1.1", server.url, { ca: pki.ca.certPem });
    await connectCall("Connect binary over HTTP/2", server.url, { ca: pki.ca.certPem });
    await server.close(2000);
    await assert.rejects(connectCall("Connect binary over HTTP/2", server.url, { ca: pki.ca.certPem }));
  });
});
