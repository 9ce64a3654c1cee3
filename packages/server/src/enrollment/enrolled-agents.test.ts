import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { EnrollmentService } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService, type RegisterNodeRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { ListVmsRequestSchema, ListVmsResponseSchema, type ListVmsResponse } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { enroll, SimulatedBackend, type AgentTls } from "@quantix/agent";
import { CONTROL_PLANE_URI, nodeUri } from "@quantix/core";
import { issueWithNewKey, type KeyAndCert } from "@quantix/rpc";
import { bearer, createTestPki, grpcJsUnary, loginAsAdmin, TEST_ADMIN_PASSWORD, rejection, TestAgent, until, type TestPki } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { AGENT_IDENTITY_CONDITION } from "../hypervisor/agent-identity-check.js";

// Enrolled agents over real mutual TLS on loopback (issue 12): an agent joins with a
// one-time token and gets a certificate naming its node; the control plane accepts a
// node's registration and heartbeats only from the holder of that node's certificate,
// dials it over mutual TLS checking the node's identity (an endpoint that answers with
// another certificate is not called, and the node's status says why), and the agent
// answers the control plane's certificate only.

let dir: string;
let pki: TestPki;
let cp: ControlPlane;
let adminToken: string;
const agents: TestAgent[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-enrolled-"));
  pki = await createTestPki();
  const files = { "ca.crt": pki.ca.certPem, "ca.key": pki.ca.keyPem, "server.crt": pki.server.certPem, "server.key": pki.server.keyPem };
  for (const [name, pem] of Object.entries(files)) await writeFile(join(dir, name), pem, { mode: 0o600 });
  const env = { QUANTIX_TLS_CERT: join(dir, "server.crt"), QUANTIX_TLS_KEY: join(dir, "server.key"), QUANTIX_CA_CERT: join(dir, "ca.crt"), QUANTIX_CA_KEY: join(dir, "ca.key") };
  cp = await startControlPlane(loadConfig(env, { port: 0, store: { kind: "memory" }, demo: false, logLevel: "silent" }), { adminPassword: TEST_ADMIN_PASSWORD, announce: () => undefined });
  adminToken = await loginAsAdmin(cp.url, pki.ca.certPem);
});

after(async () => {
  for (const a of agents) {
    await a.kill().catch(() => undefined);
    await a.backend.close();
  }
  await cp?.close();
  await rm(dir, { recursive: true, force: true });
});

/**
 * A client of the control plane trusting the cluster CA: presenting `cert` if given (an
 * agent), else the operator (the admin's token: with TLS, callers need credentials).
 */
function cpClient<S extends typeof NodeService | typeof EnrollmentService>(service: S, cert?: KeyAndCert | AgentTls) {
  const pem = cert ? { cert: cert.certPem, key: cert.keyPem } : {};
  return createClient(service, createConnectTransport({ baseUrl: cp.url, httpVersion: "2", nodeOptions: { ca: pki.ca.certPem, ...pem }, ...(cert ? {} : { interceptors: [bearer(adminToken)] }) }));
}

async function joinToken(nodeName: string): Promise<string> {
  return (await cpClient(EnrollmentService).createJoinToken({ nodeName })).token;
}

async function enrolledDir(nodeName: string): Promise<{ stateDir: string; tls: AgentTls }> {
  const stateDir = await mkdtemp(join(dir, `${nodeName}-`));
  const tls = await enroll({ url: cp.url, joinToken: await joinToken(nodeName), caPem: pki.ca.certPem, nodeName, stateDir });
  return { stateDir, tls };
}

function registration(hostname: string, agentEndpoint: string): MessageInitShape<typeof RegisterNodeRequestSchema> {
  return { hostname, managementIp: "127.0.0.1", agentEndpoint, cpuInfo: { logicalCpus: 2 }, memoryInfo: { totalMib: 1024n } };
}

/** vmm.v1 ListVms straight to an agent's port with @grpc/grpc-js over TLS, as `cert` (none: no client certificate). */
function listVmsAt(port: number, serverName: string, ca: string, cert?: KeyAndCert | AgentTls): Promise<ListVmsResponse> {
  const creds = grpc.credentials.createSsl(Buffer.from(ca), cert ? Buffer.from(cert.keyPem) : null, cert ? Buffer.from(cert.certPem) : null);
  return grpcJsUnary(`127.0.0.1:${port}`, creds, "/vmm.v1.VmService/ListVms", ListVmsRequestSchema, ListVmsResponseSchema, {}, { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName });
}

describe("an enrolled agent", () => {
  let a: { stateDir: string; tls: AgentTls };
  let agentA: TestAgent;
  let nodeA: string;

  before(async () => {
    a = await enrolledDir("node-a");
    agentA = new TestAgent(new SimulatedBackend({ bootMs: 20 }), a.stateDir, "node-a", 100);
    agents.push(agentA);
    await agentA.start(cp.url, 0, a.tls);
    const node = await until(async () => (await cpClient(NodeService).listNodes({})).nodes.find((n) => n.hostname === "node-a" && n.status?.phase === Phase.READY), "node-a READY", 20_000);
    nodeA = node.id;
  });

  test("joined with its own key (0600 in its state dir) and a certificate naming its node; its node has that id", async () => {
    assert.equal(nodeA, a.tls.nodeId);
    assert.equal((await stat(join(a.stateDir, "tls", "node.key"))).mode & 0o777, 0o600);
    assert.match(agentA.server.url, /^https:/);
    const node = await cpClient(NodeService).getNode({ id: nodeA });
    assert.equal(node.spec?.agentEndpoint, agentA.server.url);
  });

  test("the control plane drives it over mutual TLS", async () => {
    const hv = await until(() => cp.agents?.get(nodeA), "the agent attached", 10_000);
    await hv.ping();
    assert.ok(cp.drivers.has(nodeA));
  });

  test("a replayed join token is refused with UNAUTHENTICATED, saying it was used", async () => {
    const token = await joinToken("node-replay");
    await enroll({ url: cp.url, joinToken: token, caPem: pki.ca.certPem, nodeName: "node-replay", stateDir: await mkdtemp(join(dir, "replay-1-")) });
    const again = await rejection(cpClient(EnrollmentService).enroll({ joinToken: token, csrPem: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----" }));
    assert.equal(again.code, Code.Unauthenticated);
    await assert.rejects(enroll({ url: cp.url, joinToken: token, caPem: pki.ca.certPem, nodeName: "node-replay", stateDir: await mkdtemp(join(dir, "replay-2-")) }), /already used/);
  });

  test("a wrong join token is refused with UNAUTHENTICATED; an agent that does not trust the control plane's CA does not enroll", async () => {
    const token = await joinToken("node-wrong");
    const wrong = await rejection(cpClient(EnrollmentService).enroll({ joinToken: `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`, csrPem: "x" }));
    assert.equal(wrong.code, Code.Unauthenticated);
    const other = await createTestPki("not the cluster's");
    await assert.rejects(enroll({ url: cp.url, joinToken: token, caPem: other.ca.certPem, nodeName: "node-wrong", stateDir: await mkdtemp(join(dir, "wrong-")) }), /certificate/);
    // The token is still good: nothing was used.
    await enroll({ url: cp.url, joinToken: token, caPem: pki.ca.certPem, nodeName: "node-wrong", stateDir: await mkdtemp(join(dir, "wrong-ok-")) });
  });

  test("a second agent on the same host cannot take over the node: no certificate, or another node's", async () => {
    const anonymous = await rejection(cpClient(NodeService).registerNode(registration("node-a", "https://127.0.0.1:1")));
    assert.equal(anonymous.code, Code.Unauthenticated);
    assert.match(anonymous.rawMessage, /enrolled agent/);
    const b = await enrolledDir("node-b");
    const asB = cpClient(NodeService, b.tls);
    const takeover = await rejection(asB.registerNode(registration("node-a", "https://127.0.0.1:1")));
    assert.equal(takeover.code, Code.PermissionDenied);
    const beat = await rejection(asB.updateHeartbeat({ id: nodeA }));
    assert.equal(beat.code, Code.PermissionDenied);
    const noCertBeat = await rejection(cpClient(NodeService).updateHeartbeat({ id: nodeA }));
    assert.equal(noCertBeat.code, Code.Unauthenticated);
    // A real second agent process-alike, unenrolled, with the same node name: refused on every try.
    const second = new TestAgent(new SimulatedBackend({ bootMs: 20 }), await mkdtemp(join(dir, "second-")), "node-a", 100);
    agents.push(second);
    await second.start(cp.url, 0);
    const before = (await cpClient(NodeService).getNode({ id: nodeA })).status?.lastHeartbeat;
    // Wait for the first agent to heartbeat twice more: the second had as long to try.
    await until(async () => {
      const beatNow = (await cpClient(NodeService).getNode({ id: nodeA })).status?.lastHeartbeat;
      return beatNow && before && beatNow.seconds * 1000n + BigInt(beatNow.nanos) / 1_000_000n > before.seconds * 1000n + BigInt(before.nanos) / 1_000_000n + 150n ? true : undefined;
    }, "two more heartbeats of the first agent", 10_000);
    const node = await cpClient(NodeService).getNode({ id: nodeA });
    assert.equal(node.spec?.agentEndpoint, agentA.server.url, "the node is still the first agent's");
    assert.equal((await cpClient(NodeService).listNodes({})).nodes.filter((n) => n.hostname === "node-a").length, 1);
    assert.equal(second.link.nodeId(), undefined, "the second agent never registered");
  });

  test("the agent refuses vmm.v1 calls without the control plane's client certificate", async () => {
    const controlPlane = await issueWithNewKey(pki.ca, { commonName: "cp", uris: [CONTROL_PLANE_URI], usages: ["client"], validityDays: 1 });
    const ok = await listVmsAt(agentA.server.port, "node-a", pki.ca.certPem, controlPlane);
    assert.deepEqual(ok.vms, []);
    // No certificate, or one of another CA: the handshake fails.
    await assert.rejects(listVmsAt(agentA.server.port, "node-a", pki.ca.certPem));
    const foreign = await (await createTestPki("another CA")).node(nodeA);
    await assert.rejects(listVmsAt(agentA.server.port, "node-a", pki.ca.certPem, foreign));
    // Another node's agent certificate of the same CA: PERMISSION_DENIED.
    const other = await pki.node("some-other-node");
    await assert.rejects(listVmsAt(agentA.server.port, "node-a", pki.ca.certPem, other), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED);
  });

  test("the control plane does not call an endpoint that answers with another certificate; the node's status says why", async () => {
    const c = await enrolledDir("node-c");
    const asC = cpClient(NodeService, c.tls);
    const identity = async (want: RegExp) =>
      until(async () => {
        const n = await cpClient(NodeService).getNode({ id: c.tls.nodeId });
        const cond = n.status?.conditions.find((x) => x.type === AGENT_IDENTITY_CONDITION);
        return cond && cond.reason === "AgentIdentityMismatch" && want.test(cond.message) ? cond : undefined;
      }, `the ${AGENT_IDENTITY_CONDITION} condition`, 10_000);
    // Its endpoint is the control plane's own listener.
    await asC.registerNode(registration("node-c", cp.url));
    await asC.updateHeartbeat({ id: c.tls.nodeId });
    await identity(new RegExp(`not node ${c.tls.nodeId}'s`));
    assert.equal(cp.drivers.has(c.tls.nodeId), false);
    // Its endpoint is another enrolled agent (node-a's).
    await asC.registerNode(registration("node-c", agentA.server.url));
    const cond = await identity(new RegExp(nodeUri(nodeA).replace(/[.]/g, "\\.")));
    assert.match(cond.message, /is not called/);
    assert.equal(cp.drivers.has(c.tls.nodeId), false);
  });
});
