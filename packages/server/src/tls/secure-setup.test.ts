import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import type { Logger } from "@quantix/rpc";
import { loginAsAdmin, quantixRejection, rejection, TEST_ADMIN_PASSWORD } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { CA_FILES, runCaCommand } from "../pki/ca-command.js";

// A first secure setup: `quantix ca init` and `quantix ca issue-server` write a CA and a
// server certificate that serve a real TLS control plane; a client trusting only that CA
// calls it, one that does not is refused. A control plane on a non-loopback address
// without TLS refuses to start unless told to run insecure, which it logs loudly.

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-ca-"));
});
after(() => rm(dir, { recursive: true, force: true }));

const code = async (p: Promise<unknown>): Promise<string> => (await quantixRejection(p)).code;

describe("quantix ca", () => {
  test("issue-server before init says to create the CA first", async () => {
    assert.equal(await code(runCaCommand(["issue-server", "--dir", join(dir, "none"), "--name", "localhost"])), "failed_precondition");
  });

  test("init writes the CA key 0600 and its certificate; a second init replaces nothing without --force", async () => {
    await runCaCommand(["init", "--dir", join(dir, "pki")]);
    assert.equal((await stat(join(dir, "pki", CA_FILES.caKey))).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, "pki"))).mode & 0o777, 0o700);
    const key = await readFile(join(dir, "pki", CA_FILES.caKey), "utf8");
    assert.equal(await code(runCaCommand(["init", "--dir", join(dir, "pki")])), "already_exists");
    assert.equal(await readFile(join(dir, "pki", CA_FILES.caKey), "utf8"), key);
  });

  test("issue-server: bad names and addresses are refused and nothing is written", async () => {
    for (const args of [["--name", "bad name!"], ["--name", "localhost", "--ip", "300.1.1.1"], ["--ip", "127.0.0.1"], ["--name", "localhost", "--days", "0"], ["--name", "localhost", "--what"]]) {
      assert.equal(await code(runCaCommand(["issue-server", "--dir", join(dir, "pki"), ...args])), "invalid_argument", args.join(" "));
    }
    await assert.rejects(stat(join(dir, "pki", CA_FILES.serverKey)), "no server key was written");
    assert.equal(await code(runCaCommand(["init"])), "invalid_argument");
  });

  test("issue-server writes the server key 0600 and a certificate for its names", async () => {
    const out = await runCaCommand(["issue-server", "--dir", join(dir, "pki"), "--name", "localhost", "--ip", "127.0.0.1", "--ip", "::1"]);
    assert.match(out, /QUANTIX_TLS_CERT=/);
    assert.equal((await stat(join(dir, "pki", CA_FILES.serverKey))).mode & 0o777, 0o600);
    assert.equal(await code(runCaCommand(["issue-server", "--dir", join(dir, "pki"), "--name", "localhost"])), "already_exists");
    await runCaCommand(["issue-server", "--dir", join(dir, "pki"), "--name", "localhost", "--ip", "127.0.0.1", "--force"]);
  });
});

describe("a control plane serving the command's certificates", () => {
  let cp: ControlPlane;
  const pki = () => join(dir, "pki");
  before(async () => {
    const env = { QUANTIX_TLS_CERT: join(pki(), CA_FILES.serverCert), QUANTIX_TLS_KEY: join(pki(), CA_FILES.serverKey) };
    cp = await startControlPlane(loadConfig(env, { port: 0, store: { kind: "memory" }, logLevel: "silent", demo: false }), { adminPassword: TEST_ADMIN_PASSWORD, announce: () => undefined });
  });
  after(() => cp?.close());

  test("is at an https URL; clients trusting only the cluster CA call it (Connect JSON, gRPC), with a token (TLS: no local trust)", async () => {
    assert.match(cp.url, /^https:\/\/127\.0\.0\.1:/);
    const ca = await readFile(join(pki(), CA_FILES.caCert), "utf8");
    const token = await loginAsAdmin(cp.url, ca);
    for (const t of [createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", nodeOptions: { ca } }), createGrpcTransport({ baseUrl: cp.url, nodeOptions: { ca } })]) {
      const res = await createClient(NodeService, t).listNodes({}, { headers: { authorization: `Bearer ${token}` } });
      assert.deepEqual(res.nodes, []);
      assert.equal((await rejection(createClient(NodeService, t).listNodes({}))).code, Code.Unauthenticated, "without a token");
    }
  });

  test("a client that does not trust the cluster CA is refused", async () => {
    await assert.rejects(createClient(NodeService, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" })).listNodes({}), /certificate/);
  });
});

describe("the security mode", () => {
  test("loopback without TLS is local trust; with TLS it is not", () => {
    assert.equal(loadConfig({}).localTrust, true);
    assert.equal(loadConfig({ QUANTIX_ADDR: "[::1]:8080" }).localTrust, true);
    const tlsEnv = { QUANTIX_TLS_CERT: join(dir, "pki", CA_FILES.serverCert), QUANTIX_TLS_KEY: join(dir, "pki", CA_FILES.serverKey) };
    const c = loadConfig(tlsEnv);
    assert.deepEqual([c.localTrust, c.tls?.certFile], [false, tlsEnv.QUANTIX_TLS_CERT]);
  });

  test("a non-loopback address without TLS is refused, saying what to configure", () => {
    for (const addr of ["0.0.0.0:8080", ":8080", "192.0.2.10:8080", "[::]:8080", "example.com:8080"]) {
      assert.throws(() => loadConfig({ QUANTIX_ADDR: addr }), /not a loopback address, without TLS.*QUANTIX_TLS_CERT and QUANTIX_TLS_KEY.*quantix ca init.*QUANTIX_INSECURE=1/s, addr);
    }
  });

  test("half a setting is refused by name", () => {
    assert.throws(() => loadConfig({ QUANTIX_TLS_CERT: join(dir, "pki", CA_FILES.serverCert) }), /QUANTIX_TLS_CERT and QUANTIX_TLS_KEY go together/);
    assert.throws(() => loadConfig({ QUANTIX_TLS_CERT: join(dir, "missing.crt"), QUANTIX_TLS_KEY: join(dir, "missing.key") }), /QUANTIX_TLS_CERT=.*no such file/);
    assert.throws(() => loadConfig({ QUANTIX_CA_CERT: join(dir, "pki", CA_FILES.caCert), QUANTIX_CA_KEY: join(dir, "pki", CA_FILES.caKey) }), /need TLS/);
    assert.throws(() => loadConfig({ QUANTIX_INSECURE: "yes" }), /QUANTIX_INSECURE/);
  });

  test("QUANTIX_INSECURE=1 starts on a non-loopback address and warns at start", async () => {
    const config = loadConfig({ QUANTIX_ADDR: "0.0.0.0:0", QUANTIX_INSECURE: "1" }, { store: { kind: "memory" }, demo: false });
    assert.deepEqual([config.insecure, config.localTrust], [true, false]);
    const lines: { level: string; msg: string }[] = [];
    const log: Logger = { log: (level, msg) => lines.push({ level, msg }) };
    const cp = await startControlPlane(config, { log });
    try {
      assert.ok(lines.some((l) => l.level === "warn" && /^INSECURE: .*QUANTIX_TLS_CERT/.test(l.msg)), JSON.stringify(lines));
    } finally {
      await cp.close();
    }
    // A loopback control plane says it runs in local trust mode.
    lines.length = 0;
    const local = await startControlPlane(loadConfig({}, { port: 0, store: { kind: "memory" }, demo: false }), { log });
    await local.close();
    assert.ok(lines.some((l) => l.level === "info" && /^local trust mode/.test(l.msg)));
  });
});
