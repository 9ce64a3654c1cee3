import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { QuantixError, VM_KIND } from "@quantix/core";
import { startPostgres, startTestServer, type TestPostgres } from "@quantix/testing";
import pg from "pg";
import { silentLogger } from "@quantix/rpc";
import { openStore } from "./open-store.js";
import type { SqlStore } from "./sql/sql-store.js";
import { fixtureVm } from "./store-fixtures.js";

// Refusals change nothing: a data directory or database Quantix cannot use is left exactly
// as it was, and the message says what is wrong and what to do.

const TUNING = { historyRevisions: 1000, pgMaxConnections: 4 };

/** A digest of every file's path, mode, size and content under `dir` (or of the file). */
function treeDigest(path: string): string {
  const h = createHash("sha256");
  const walk = (p: string) => {
    const st = statSync(p);
    h.update(`${p}:${st.mode}:${st.size}\n`);
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else h.update(readFileSync(p));
  };
  walk(path);
  return h.digest("hex");
}

async function refused(open: () => Promise<unknown>, pattern: RegExp): Promise<string> {
  let message = "";
  await assert.rejects(open(), (e: unknown) => {
    assert.ok(e instanceof QuantixError, `expected a QuantixError, got ${String(e)}`);
    assert.match(e.message, pattern);
    message = e.message;
    return true;
  });
  return message;
}

const embedded = (dataDir: string) => openStore({ kind: "embedded", dataDir }, TUNING, silentLogger);

describe("opening the embedded store", () => {
  const root = mkdtempSync(join(tmpdir(), "quantix-open-"));
  let good: string;
  before(async () => {
    // A real data directory with data in it, used (as copies) by the corruption cases.
    good = join(root, "good");
    const s = await startTestServer({ store: { kind: "embedded", dataDir: good }, demo: true });
    await s.close();
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const copyOfGood = (name: string): string => {
    const dir = join(root, name);
    cpSync(good, dir, { recursive: true });
    return dir;
  };

  it("refuses a path that is a file", async () => {
    const file = join(root, "a-file");
    writeFileSync(file, "not a directory");
    const before = treeDigest(file);
    await refused(() => embedded(file), /not a directory.*Nothing was changed/s);
    assert.equal(treeDigest(file), before);
  });

  it("refuses a non-empty directory that is not a Quantix data directory", async () => {
    const dir = join(root, "foreign");
    mkdirSync(dir);
    writeFileSync(join(dir, "notes.txt"), "mine");
    const before = treeDigest(dir);
    await refused(() => embedded(dir), /not a Quantix data directory.*empty or new directory/s);
    assert.equal(treeDigest(dir), before);
  });

  for (const [what, damage, pattern] of [
    ["an unreadable marker", (d: string) => writeFileSync(join(d, "quantix-data.json"), "{ garbage"), /quantix-data\.json cannot be read/],
    ["a missing PG_VERSION", (d: string) => rmSync(join(d, "pg", "PG_VERSION")), /database \(pg\/\) is damaged/],
    ["a damaged pg_control", (d: string) => writeFileSync(join(d, "pg", "global", "pg_control"), Buffer.alloc(8192, 0x5a)), /embedded database cannot be opened.*damaged/s],
  ] as const) {
    it(`refuses a data directory with ${what}, and changes nothing`, async () => {
      const dir = copyOfGood(what.replace(/\W+/g, "-"));
      damage(dir);
      const before = treeDigest(dir);
      await refused(() => embedded(dir), pattern);
      assert.equal(treeDigest(dir), before);
    });
  }

  it("refuses a data directory whose database is at a newer schema version before opening it, and changes nothing", async () => {
    const dir = copyOfGood("newer-schema");
    const marker = join(dir, "quantix-data.json");
    writeFileSync(marker, JSON.stringify({ ...JSON.parse(readFileSync(marker, "utf8")), schema: 999 }));
    const before = treeDigest(dir);
    await refused(() => embedded(dir), /schema is at version 999, newer than this Quantix binary understands.*Nothing was changed/s);
    assert.equal(treeDigest(dir), before);
  });

  it("starts in a directory a process left with only its lock file (it died before writing anything)", async () => {
    const dir = join(root, "only-lock");
    mkdirSync(dir);
    writeFileSync(join(dir, "quantix.lock"), "999999999");
    const s = await embedded(dir);
    await s.close();
  });

  it("refuses a data directory another live process holds", async () => {
    const dir = join(root, "held");
    const s = await embedded(dir);
    await s.close();
    // A live Node process (a pid reused by another program would not count).
    const holder = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"]);
    try {
      writeFileSync(join(dir, "quantix.lock"), String(holder.pid));
      await refused(() => embedded(dir), new RegExp(`in use by another Quantix process \\(pid ${holder.pid}\\)`));
    } finally {
      holder.kill();
    }
  });

  it("takes over the lock of a process that died", async () => {
    const dir = join(root, "stale");
    const s = await embedded(dir);
    await s.close();
    writeFileSync(join(dir, "quantix.lock"), "999999999");
    const again = await embedded(dir);
    await again.close();
  });

  it("seeds the demo data once: a user's deletion is not undone by a restart; QUANTIX_DEMO=0 starts empty", async () => {
    const dir = join(root, "demo");
    const first = await startTestServer({ store: { kind: "embedded", dataDir: dir }, demo: true });
    const listed = await first.vms.listVMs({});
    assert.equal(listed.vms.length, 4);
    await first.vms.deleteVM({ id: listed.vms[0]!.id, force: true });
    await first.close();
    const second = await startTestServer({ store: { kind: "embedded", dataDir: dir }, demo: true });
    assert.equal((await second.vms.listVMs({})).vms.length, 3);
    await second.close();
    const empty = await startTestServer({ store: { kind: "embedded", dataDir: join(root, "no-demo") }, demo: false });
    assert.equal((await empty.vms.listVMs({})).totalCount, 0);
    assert.equal((await empty.nodes.listNodes({})).totalCount, 0);
    await empty.close();
  });
});

describe("opening the PostgreSQL store", () => {
  let server: TestPostgres;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => server?.stop());
  const postgres = (url: string) => openStore({ kind: "postgres", url }, TUNING, silentLogger);

  it("refuses an unreachable server, saying where and what to check, without the password", async () => {
    const msg = await refused(() => postgres("postgres://quantix:s3cret@127.0.0.1:1/quantix"), /cannot use PostgreSQL at .*127\.0\.0\.1:1.*ECONNREFUSED.*QUANTIX_STORE/s);
    assert.doesNotMatch(msg, /s3cret/);
  });

  it("refuses a database that does not exist", async () => {
    await refused(() => postgres(`postgres://postgres@127.0.0.1:${server.port}/nosuchdb`), /cannot use PostgreSQL.*nosuchdb.*does not exist/s);
  });

  it("a store whose server goes away answers UNAVAILABLE (retryable), not an internal error", async () => {
    const own = await startPostgres();
    const s = await postgres(own.url);
    try {
      await s.of(VM_KIND).create(fixtureVm());
      // A transaction in flight when the server goes: its connection's 'error' must not end this process.
      const inFlight = (s as SqlStore).driver.transaction(async (tx) => tx.query("SELECT pg_sleep(5)"));
      inFlight.catch(() => undefined);
      await new Promise((r) => setTimeout(r, 200));
      await own.stop();
      await assert.rejects(inFlight, (e: unknown) => e instanceof QuantixError && e.code === "unavailable");
      await assert.rejects(s.of(VM_KIND).get("anything"), (e: unknown) => e instanceof QuantixError && e.code === "unavailable" && /database is unavailable/.test(e.message));
      await assert.rejects(s.of(VM_KIND).create(fixtureVm()), (e: unknown) => e instanceof QuantixError && e.code === "unavailable");
    } finally {
      await s.close().catch(() => undefined);
    }
  });

  it("two replicas migrating at once apply each migration once", async () => {
    const url = await server.createDatabase("together");
    const [a, b] = await Promise.all([postgres(url), postgres(url)]);
    await Promise.all([a.close(), b.close()]);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const { rows } = await c.query<{ version: number; n: string }>("SELECT version, count(*) AS n FROM quantix_schema_migrations GROUP BY version");
      assert.ok(rows.length > 0 && rows.every((r) => r.n === "1"));
    } finally {
      await c.end();
    }
  });

  it("refuses a database at a newer schema version, and changes nothing", async () => {
    const url = await server.createDatabase("newer");
    const s = await postgres(url);
    await s.of(VM_KIND).create(fixtureVm());
    await s.close();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query("INSERT INTO quantix_schema_migrations (version, name) VALUES (999, 'from the future')");
      const snapshot = async () => JSON.stringify((await c.query("SELECT revision, (SELECT count(*) FROM quantix_vms) AS vms, (SELECT count(*) FROM quantix_changes) AS changes, (SELECT count(*) FROM quantix_schema_migrations) AS migrations FROM quantix_meta")).rows);
      const before = await snapshot();
      await refused(() => postgres(url), /schema is at version 999, newer than this Quantix binary understands.*Nothing was changed/s);
      assert.equal(await snapshot(), before);
    } finally {
      await c.end();
    }
  });
});
