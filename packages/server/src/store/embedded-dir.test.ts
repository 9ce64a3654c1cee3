import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { spawnUnreaped, until, type UnreapedProcess } from "@quantix/testing";
import { openDataDir } from "./embedded-dir.js";

const root = mkdtempSync(join(tmpdir(), "quantix-data-lock-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** A Node process that takes the data directory's lock, says so, and stays. */
async function holder(dir: string): Promise<UnreapedProcess> {
  const code = `import { openDataDir } from ${JSON.stringify(new URL("./embedded-dir.ts", import.meta.url).href)};
await openDataDir(process.env.DATA_DIR, 1);
console.log("locked");
setInterval(() => {}, 60_000);`;
  const p = await spawnUnreaped(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], { DATA_DIR: dir });
  try {
    await until(() => (p.out().includes("locked") ? true : undefined), "the holder to take the lock", 30_000);
  } catch (err) {
    p.release();
    throw err;
  }
  return p;
}

describe("the data directory's lock", () => {
  it("is refused while its holder runs, and taken over once the holder is killed, though it is still a zombie", async () => {
    const dir = join(root, "zombie");
    const p = await holder(dir);
    try {
      await assert.rejects(openDataDir(dir, 1), new RegExp(`in use by another Quantix process \\(pid ${p.pid}\\)`));
      await p.killToZombie();
      // A restart right after a SIGKILL, before the supervisor reaps the old process.
      const d = await openDataDir(dir, 1);
      assert.equal(readFileSync(join(dir, "quantix.lock"), "utf8").split(" ")[0], String(process.pid));
      d.release();
    } finally {
      p.release();
    }
  });

  it("is taken over from a live process that got the holder's pid later (its start time differs)", async () => {
    const dir = join(root, "reused");
    (await openDataDir(dir, 1)).release();
    // This test's own parent is alive and runs Node, but it did not start at time 1.
    writeFileSync(join(dir, "quantix.lock"), `${process.ppid} 1`);
    const d = await openDataDir(dir, 1);
    d.release();
  });

  it("is held by the OS while its holder lives: removing the lock file (a racing process taking it over) does not free it", async () => {
    const dir = join(root, "os-lock");
    const p = await holder(dir);
    try {
      rmSync(join(dir, "quantix.lock"));
      await assert.rejects(openDataDir(dir, 1), /in use by another Quantix process/);
      await p.killToZombie();
      (await openDataDir(dir, 1)).release();
    } finally {
      p.release();
    }
  });

  it("leaves nothing behind on release", async () => {
    const dir = join(root, "clean");
    (await openDataDir(dir, 1)).release();
    (await openDataDir(dir, 1)).release();
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.startsWith("quantix.lock")),
      [],
    );
  });
});

