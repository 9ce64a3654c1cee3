import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { until } from "@quantix/testing";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

function run(env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, out: () => out, err: () => err };
}

test("the agent process serves health, and SIGTERM exits 0", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-agent-"));
  const p = run({ VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_STATE_DIR: stateDir });
  try {
    const url = await until(() => /"url":"(http:[^"]+)"/.exec(p.out())?.[1], "the listening line", 30_000);
    const res = await fetch(`${url}/_/health`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { status: string; backend: { type: string } };
    assert.equal(body.status, "ok");
    assert.equal(body.backend.type, "simulated");
    p.child.kill("SIGTERM");
    assert.equal(await p.exited, 0);
    await assert.rejects(fetch(`${url}/_/health`));
  } finally {
    p.child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("a bad VMCP_BACKEND exits 2 naming it", async () => {
  const p = run({ VMCP_BACKEND: "vmware" });
  assert.equal(await p.exited, 2);
  assert.match(p.err(), /VMCP_BACKEND/);
  assert.match(p.err(), /vmware/);
});
