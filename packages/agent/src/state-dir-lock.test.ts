import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { spawnUnreaped, until } from "@quantix/testing";
import { lockStateDir, STATE_DIR_LOCK } from "./state-dir-lock.js";

const root = mkdtempSync(join(tmpdir(), "quantix-agent-lock-"));
after(() => rmSync(root, { recursive: true, force: true }));

function stateDir(name: string): string {
  return mkdtempSync(join(root, `${name}-`));
}

describe("the agent's state directory lock", () => {
  it("is refused while its holder runs, and taken over once the holder is killed, though it is still a zombie", async () => {
    const dir = stateDir("zombie");
    const code = `import { lockStateDir } from ${JSON.stringify(new URL("./state-dir-lock.ts", import.meta.url).href)};
lockStateDir(process.env.STATE_DIR);
console.log("locked");
setInterval(() => {}, 60_000);`;
    const p = await spawnUnreaped(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], { STATE_DIR: dir });
    try {
      await until(() => (p.out().includes("locked") ? true : undefined), "the holder to take the lock", 30_000);
      assert.throws(() => lockStateDir(dir), new RegExp(`is in use by another agent \\(pid ${p.pid}\\)`));
      await p.killToZombie();
      lockStateDir(dir)();
    } finally {
      p.release();
    }
  });

  it("is taken over from a live process that got the holder's pid later (its start time differs)", () => {
    const dir = stateDir("reused");
    // This test's parent is alive and runs Node, but it did not start at time 1.
    writeFileSync(join(dir, STATE_DIR_LOCK), `${process.ppid} 1`);
    lockStateDir(dir)();
  });

  it("still honours a lock of an older release (a pid alone) while a Node process has that pid", () => {
    const dir = stateDir("legacy");
    writeFileSync(join(dir, STATE_DIR_LOCK), String(process.ppid));
    assert.throws(() => lockStateDir(dir), new RegExp(`is in use by another agent \\(pid ${process.ppid}\\)`));
  });

  it("leaves nothing behind on release", () => {
    const dir = stateDir("clean");
    lockStateDir(dir)();
    lockStateDir(dir)();
    assert.deepEqual(readdirSync(dir), []);
  });
});
