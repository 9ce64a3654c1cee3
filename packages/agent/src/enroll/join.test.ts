import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { EnrollmentService } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { createTestPki, runNode, startTestServer, until, within, type TestPki, type TestServer } from "@quantix/testing";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

// `npm run agent -- --join <url> --join-token <t> --ca-cert <ca.pem>` as a real process: it
// enrolls, serves vmm.v1 over TLS, registers with its certificate; restarted without the
// join flags it is still enrolled; a replayed token makes a second agent exit saying so.

let dir: string;
let pki: TestPki;
let cp: TestServer;
const caFile = () => join(dir, "ca.crt");

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-join-"));
  pki = await createTestPki();
  const files = { "ca.crt": pki.ca.certPem, "ca.key": pki.ca.keyPem, "server.crt": pki.server.certPem, "server.key": pki.server.keyPem };
  for (const [name, pem] of Object.entries(files)) await writeFile(join(dir, name), pem, { mode: 0o600 });
  cp = await startTestServer(
    { demo: false, tls: { certFile: join(dir, "server.crt"), keyFile: join(dir, "server.key"), clientCaFile: undefined }, ca: { certFile: caFile(), keyFile: join(dir, "ca.key") } },
    undefined,
    pki.ca.certPem,
  );
});
after(async () => {
  await cp?.close();
  await rm(dir, { recursive: true, force: true });
});

test("an agent joins with a one-time token, then restarts enrolled; the token does not enroll another", async () => {
  // Join tokens are an operator's to make: the test server's admin (TLS: no local trust).
  const enrollment = createClient(EnrollmentService, cp.transport);
  const { token, joinToken } = await enrollment.createJoinToken({ nodeName: "joined-host" });
  const stateDir = join(dir, "agent-1");
  const env = { VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_ADDRESS: "127.0.0.1", VMCP_STATE_DIR: stateDir, QUANTIX_NODE_NAME: "joined-host" };
  const procs: ReturnType<typeof runNode>[] = [];
  try {
    const first = runNode(["--import", "tsx", MAIN, "--join", cp.url, "--join-token", token, "--ca-cert", caFile()], env);
    procs.push(first);
    const url = await until(() => /"url":"(https:[^"]+)"/.exec(first.out())?.[1], "the agent's https listening line", 30_000);
    const ready = async () => until(async () => (await cp.nodes.listNodes({})).nodes.find((n) => n.hostname === "joined-host" && n.status?.phase === Phase.READY), "the joined node READY", 30_000);
    const node = await ready();
    assert.equal(node.id, joinToken?.nodeId);
    assert.equal(node.spec?.agentEndpoint, url);
    assert.equal((await stat(join(stateDir, "tls", "node.key"))).mode & 0o777, 0o600);
    first.child.kill("SIGTERM");
    await within(first.exited, 20_000, "the agent stopping");

    // Restarted without the join flags: still enrolled (its state dir), registers as the same node.
    const again = runNode(["--import", "tsx", MAIN], { ...env, QUANTIX_CONTROL_PLANE: cp.url });
    procs.push(again);
    await until(() => /"url":"(https:[^"]+)"/.exec(again.out())?.[1], "the restarted agent's https listening line", 30_000);
    await until(async () => ((await cp.nodes.getNode({ id: node.id })).spec?.agentEndpoint !== url ? true : undefined), "the node re-registered at the new port", 30_000);

    // The token is spent: another agent using it exits 1 saying so.
    const replay = runNode(["--import", "tsx", MAIN, "--join", cp.url, "--join-token", token, "--ca-cert", caFile()], { ...env, VMCP_STATE_DIR: join(dir, "agent-2") });
    procs.push(replay);
    assert.equal(await within(replay.exited, 30_000, "the replaying agent exiting"), 1);
    assert.match(replay.err(), /the join token was already used/);
  } finally {
    for (const p of procs) p.child.kill("SIGKILL");
  }
});
