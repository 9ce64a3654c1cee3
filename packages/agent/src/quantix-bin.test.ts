import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { runNode, until } from "@quantix/testing";

// bin/quantix.mjs, run from outside the repository as an installed command would be.
const BIN = new URL("../../../bin/quantix.mjs", import.meta.url).pathname;

const run = (args: string[], env: Record<string, string> = {}) => runNode([BIN, ...args], env, tmpdir());

test("quantix --help lists the commands; an unknown command exits 2; quantix agent --help lists the agent's settings", async () => {
  const help = run(["--help"]);
  assert.equal(await help.exited, 0);
  assert.match(help.out(), /agent .*host agent/);
  assert.match(help.out(), /server .*control plane/);
  assert.match(help.out(), /ca .*cluster CA/);
  const bad = run(["frobnicate"]);
  assert.equal(await bad.exited, 2);
  assert.match(bad.err(), /unknown command 'frobnicate'/);
  const agentHelp = run(["agent", "--help"]);
  assert.equal(await agentHelp.exited, 0);
  assert.match(agentHelp.out(), /--image-dirs +VMCP_IMAGE_DIRS/);
  const serverHelp = run(["server", "--help"]);
  assert.equal(await serverHelp.exited, 0);
  assert.match(serverHelp.out(), /QUANTIX_/);
});

test("quantix agent serves vmm.v1 with the flags it is given, and SIGTERM exits 0", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-bin-"));
  const p = run(["agent", "--backend", "simulated", "--port", "0", "--state-dir", stateDir]);
  try {
    const url = await until(() => /"url":"(http:[^"]+)"/.exec(p.out())?.[1], `the agent's listening line; stderr: ${p.err()}`, 30_000);
    const body = (await (await fetch(`${url}/_/health`)).json()) as { backend: { type: string } };
    assert.equal(body.backend.type, "simulated");
    p.child.kill("SIGTERM");
    assert.equal(await p.exited, 0);
  } finally {
    p.child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("quantix server starts the control plane", async () => {
  const p = run(["server"], { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "0" });
  try {
    const port = await until(() => /127\.0\.0\.1:(\d{2,5})/.exec(p.out() + p.err())?.[1], "the server's address in its log", 30_000);
    const res = await fetch(`http://127.0.0.1:${port}/_/health`);
    assert.equal(res.status, 200);
  } finally {
    p.child.kill("SIGKILL");
    await p.exited;
  }
});

test("quantix ca init and issue-server write the cluster CA and a server certificate; bad input exits 2 naming it", async () => {
  const dir = await mkdtemp(join(tmpdir(), "quantix-bin-ca-"));
  try {
    const help = run(["ca", "--help"]);
    assert.equal(await help.exited, 0);
    assert.match(help.out(), /quantix ca init --dir/);
    const init = run(["ca", "init", "--dir", join(dir, "pki")]);
    assert.equal(await init.exited, 0, init.err());
    const issue = run(["ca", "issue-server", "--dir", join(dir, "pki"), "--name", "localhost", "--ip", "127.0.0.1"]);
    assert.equal(await issue.exited, 0, issue.err());
    assert.match(issue.out(), /QUANTIX_TLS_CERT=.*server\.crt QUANTIX_TLS_KEY=.*server\.key/);
    const again = run(["ca", "init", "--dir", join(dir, "pki")]);
    assert.equal(await again.exited, 1);
    assert.match(again.err(), /ca\.key exists; nothing was written \(pass --force/);
    const bad = run(["ca", "issue-server", "--dir", join(dir, "pki"), "--name", "localhost", "--ip", "not-an-ip"]);
    assert.equal(await bad.exited, 2);
    assert.match(bad.err(), /--ip must be an IPv4 or IPv6 address, got 'not-an-ip'/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
