import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BSON } from "bson";
import { MemoryGateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { silentLogger } from "@quantix/rpc";
import { loginAsAdmin, rejection, startPostgres, startTestServer, type TestPostgres, type TestServer } from "@quantix/testing";
import { loadConfig } from "../config.js";
import { CA_FILES, runCaCommand } from "../pki/ca-command.js";
import { startGatewayServer, type GatewayServer } from "./gateway-server.js";

// `quantix gateway` with TLS, sharing a control plane's PostgreSQL: it serves the CA's
// certificate, and the control plane's users' tokens are its callers (TLS: no local trust).

describe("quantix gateway with TLS, on the control plane's PostgreSQL", () => {
  let dir: string;
  let pg: TestPostgres;
  let cp: TestServer;
  let gw: GatewayServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "quantix-gw-tls-"));
    await runCaCommand(["init", "--dir", dir]);
    await runCaCommand(["issue-server", "--dir", dir, "--name", "localhost", "--ip", "127.0.0.1"]);
    pg = await startPostgres();
    cp = await startTestServer({ demo: false, store: { kind: "postgres", url: pg.url } });
    const env = { QUANTIX_TLS_CERT: join(dir, CA_FILES.serverCert), QUANTIX_TLS_KEY: join(dir, CA_FILES.serverKey) };
    gw = await startGatewayServer(loadConfig(env, { port: 0, store: { kind: "postgres", url: pg.url }, logLevel: "silent", demo: false }), { log: silentLogger });
  });
  after(async () => {
    await gw?.close();
    await cp?.close();
    await pg?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test("a client trusting the cluster CA writes with a control plane user's token; without one it is UNAUTHENTICATED; one that does not trust the CA is refused", async () => {
    assert.match(gw.url, /^https:\/\/127\.0\.0\.1:/);
    const ca = await readFile(join(dir, CA_FILES.caCert), "utf8");
    // The admin logs in at the control plane; the gateway knows the same users and tokens.
    const token = await loginAsAdmin(cp.url);
    const client = createClient(MemoryGateway, createGrpcTransport({ baseUrl: gw.url, nodeOptions: { ca } }));
    const req = { nodeId: new TextEncoder().encode("tls/doc"), diffBson: BSON.serialize({ $set: { secure: true } }), vectorClock: { entries: { t: 1n } } };
    const w = await client.writeDiff(req, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(w.success, true);
    assert.equal((await rejection(client.readSnapshot({ nodeId: req.nodeId }))).code, Code.Unauthenticated);
    await assert.rejects(createClient(MemoryGateway, createGrpcTransport({ baseUrl: gw.url })).readSnapshot({ nodeId: req.nodeId }, { headers: { authorization: `Bearer ${token}` } }), /certificate/);
    // The control plane serves the same document.
    const there = await createClient(MemoryGateway, createGrpcTransport({ baseUrl: cp.url })).readSnapshot({ nodeId: req.nodeId }, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(there.version, w.newVersion);
  });
});
