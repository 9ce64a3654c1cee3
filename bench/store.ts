import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PowerState, VirtualMachineSchema, VmStatus_State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Cursor, Store } from "@quantix/core";
import { migrate, PgDriver, PgliteDriver, type SqlDriver, SqlStore, MemoryStore } from "@quantix/server";
import { startPostgres } from "@quantix/testing";
import { RESULTS_DIR } from "./lib/proc.js";
import { absolute, compare, formatTable, machine, num, type Row } from "./lib/report.js";
import { median, nowMs } from "./lib/stats.js";
import { ISSUE_19 } from "./lib/targets.js";
import { VM_KIND } from "@quantix/core";

// `npm run bench:store`: each store's CreateVM and ListVMs against the same work done with
// the same driver in raw SQL, measured in this run. No HTTP: this is the store alone.

const PROJECT = "00000000-0000-0000-0000-0000000000b1";
const CREATES = Number(process.env["BENCH_CREATES"] ?? 2000);
const LIST_ROWS = Number(process.env["BENCH_LIST_ROWS"] ?? 100_000);
const PAGE = 100;
const started = Date.now();
const progress = (msg: string) => process.stderr.write(`[bench:store ${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${msg}\n`);

function vm(i: number, prefix: string): VirtualMachine {
  const now = timestampFromMs(1_700_000_000_000 + i);
  return create(VirtualMachineSchema, {
    id: randomUUID(),
    name: `${prefix}-${String(i).padStart(6, "0")}`,
    projectId: PROJECT,
    labels: { app: `app-${i % 10}` },
    spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, desiredPowerState: PowerState.STOPPED },
    status: { state: VmStatus_State.STOPPED },
    createdAt: now,
    updatedAt: now,
    generation: 1n,
  });
}

/** The raw SQL baseline's table: the same columns and indexes as quantix_vms, no revisions. */
const RAW_TABLE = `
  CREATE TABLE IF NOT EXISTS bench_raw (
    id text COLLATE "C" PRIMARY KEY, project_id text COLLATE "C" NOT NULL, name text COLLATE "C" NOT NULL,
    labels jsonb NOT NULL, state int NOT NULL, node_id text COLLATE "C" NOT NULL, created_ms bigint NOT NULL,
    resource_version bigint NOT NULL, data bytea NOT NULL, UNIQUE (project_id, name));
  CREATE INDEX IF NOT EXISTS bench_raw_by_name ON bench_raw (name, id);
  CREATE INDEX IF NOT EXISTS bench_raw_labels ON bench_raw USING gin (labels jsonb_path_ops);`;

const INSERT_RAW = "INSERT INTO bench_raw (id, project_id, name, labels, state, node_id, created_ms, resource_version, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const rawParams = (v: VirtualMachine, rv: number) => [v.id, v.projectId, v.name, JSON.stringify(v.labels), v.status!.state, "", Number(v.createdAt!.seconds) * 1000, rv, toBinary(VirtualMachineSchema, v)] as const;

const IN_FLIGHT = 64;
/** Untimed creates on each side before the timed ones. */
const WARMUP = 300;

/** Calls of `f(0..n-1)`, `inFlight` at a time, per second. */
async function rate(n: number, inFlight: number, f: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const t0 = nowMs();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < n) await f(next++);
  }));
  return (n / (nowMs() - t0)) * 1000;
}

/** Creates per second, ours and raw SQL's; `first` is a new store's, `later` the next window's. */
interface CreateRates {
  readonly first: { readonly ours: number; readonly raw: number };
  readonly later: { readonly ours: number; readonly raw: number };
  readonly oursConcurrent: number;
  readonly rawConcurrent: number;
}

/**
 * Creates per second: `store.of(VM_KIND).create` vs one INSERT per row (autocommit), one at
 * a time in two windows of CREATES each, then IN_FLIGHT at once (where the store commits in
 * groups, ADR 0012).
 */
async function createRates(store: Store, db: SqlDriver | undefined): Promise<CreateRates> {
  const n = CREATES;
  // Both sides warm up first, untimed: the store's creates used to run first on code the
  // JIT had not seen yet (node-postgres's paths included) and the raw INSERTs after them,
  // warm, so the ratio charged the warm-up to the store (one at a time: 0.2-0.3 measured
  // cold against 0.4-0.5 warm, same code).
  const warm = Array.from({ length: 2 * WARMUP }, (_, i) => vm(i, "warmup"));
  await rate(WARMUP, 1, (i) => store.of(VM_KIND).create(warm[i]!));
  if (db) await rate(WARMUP, 1, (i) => db.query(INSERT_RAW, rawParams(warm[WARMUP + i]!, -1 - i)));
  // Two windows one at a time, each side in turn. The store's path is longer than a raw
  // INSERT's and V8 takes a few thousand calls to compile it (TurboFan, as CreateVM over gRPC
  // in the creates group of `npm run bench`): the first window is a new store's, the second
  // the compiled path's (0.38-0.43 against 0.62 on PostgreSQL, 2026-12-07).
  const ours = Array.from({ length: 3 * n }, (_, i) => vm(i, "create"));
  const raw = Array.from({ length: 3 * n }, (_, i) => vm(i, "create"));
  const windows: { ours: number; raw: number }[] = [];
  for (const w of [0, 1]) {
    const oursRate = await rate(n, 1, (i) => store.of(VM_KIND).create(ours[w * n + i]!));
    const rawRate = db ? await rate(n, 1, (i) => db.query(INSERT_RAW, rawParams(raw[w * n + i]!, w * n + i + 1))) : NaN;
    windows.push({ ours: oursRate, raw: rawRate });
  }
  const oursConcurrent = await rate(n, IN_FLIGHT, (i) => store.of(VM_KIND).create(ours[2 * n + i]!));
  const rawConcurrent = db ? await rate(n, IN_FLIGHT, (i) => db.query(INSERT_RAW, rawParams(raw[2 * n + i]!, 2 * n + i + 1))) : NaN;
  return { first: windows[0]!, later: windows[1]!, oursConcurrent, rawConcurrent };
}

/** Bulk-loads `count` VMs into quantix_vms (and bench_raw) in batches, bypassing the store. */
async function bulkLoad(db: SqlDriver, table: "quantix_vms" | "bench_raw", count: number): Promise<void> {
  for (let from = 0; from < count; from += 2000) {
    const batch = Array.from({ length: Math.min(2000, count - from) }, (_, k) => vm(from + k, "list"));
    const cols = [batch.map((v) => v.id), batch.map((v) => v.name), batch.map((v) => JSON.stringify(v.labels)), batch.map((v) => Buffer.from(toBinary(VirtualMachineSchema, v)).toString("hex"))];
    await db.query(
      `INSERT INTO ${table} (id, project_id, name, labels, state, node_id, created_ms, resource_version, data)
       SELECT id, $5, name, labels::jsonb, ${VmStatus_State.STOPPED}, '', 1700000000000, 1, decode(data, 'hex')
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(id, name, labels, data)`,
      [...cols, PROJECT],
    );
  }
  await db.query(`ANALYZE ${table}`);
}

/** Timed reads of each page, after as many untimed ones; the two readers take turns call by call. */
const PAGE_READS = 100;
const PAGE_WARMUP = 10;

type PageRead = (after: Cursor | undefined) => Promise<unknown>;

/**
 * Median ms of a page read, the first page and one 90% of the way down, for each reader.
 * The readers alternate call by call, so that drift on a shared machine hits them alike.
 */
async function pageTimes(readers: readonly PageRead[], deep: Cursor): Promise<{ first: number; deep: number }[]> {
  const time = async (after: Cursor | undefined) => {
    const samples = readers.map(() => [] as number[]);
    for (let i = 0; i < PAGE_WARMUP + PAGE_READS; i++) {
      for (const [r, read] of readers.entries()) {
        const t = nowMs();
        await read(after);
        if (i >= PAGE_WARMUP) samples[r]!.push(nowMs() - t);
      }
    }
    return samples.map((s) => median(s));
  };
  const first = await time(undefined);
  const deepMs = await time(deep);
  return readers.map((_, r) => ({ first: first[r]!, deep: deepMs[r]! }));
}

async function listTimes(store: Store, db: SqlDriver | undefined): Promise<{ ours: { first: number; deep: number }; raw: { first: number; deep: number } }> {
  const deepName = `list-${String(Math.floor(LIST_ROWS * 0.9)).padStart(6, "0")}`;
  const deep: Cursor = { key: deepName, id: "" };
  // As ListVMs serves them: the first page also counts the matches (total_count); later
  // pages carry that total in their token and read only their rows.
  const ours: PageRead = (after) => store.of(VM_KIND).list({ where: { project_id: PROJECT }, order: { field: "name", desc: false }, after, limit: PAGE, countTotal: after === undefined });
  if (!db) return { ours: (await pageTimes([ours], deep))[0]!, raw: { first: NaN, deep: NaN } };
  const raw: PageRead = (after) =>
    after
      ? db.query("SELECT data FROM bench_raw WHERE project_id = $1 AND (name, id) > ($2, $3) ORDER BY name, id LIMIT $4", [PROJECT, String(after.key), after.id, PAGE + 1])
      : db.query("SELECT (SELECT count(*) FROM bench_raw WHERE project_id = $1) AS total, data FROM bench_raw WHERE project_id = $1 ORDER BY name, id LIMIT $2", [PROJECT, PAGE + 1]);
  const [o, r] = await pageTimes([ours, raw], deep);
  return { ours: o!, raw: r! };
}

const WRITERS = 50;

/**
 * One hot VM: WRITERS updates without a version issued at once vs the same updates one at
 * a time (updates/s), and a read of another VM during the storm (its slowest) vs unloaded
 * (median). Contention must cost throughput little and must not starve other rows.
 */
async function contention(store: Store): Promise<{ concurrent: number; sequential: number; getUnloaded: number; getDuringMax: number }> {
  const coll = store.of(VM_KIND);
  const hot = await coll.create(vm(0, "hot"));
  const other = await coll.create(vm(1, "other"));
  const update = (i: number) => coll.update(hot.id, (cur) => Object.assign(cur, { labels: { writer: String(i) } }));
  const t0 = nowMs();
  for (let i = 0; i < WRITERS; i++) await update(i);
  const sequential = (WRITERS / (nowMs() - t0)) * 1000;
  const unloaded: number[] = [];
  for (let i = 0; i < 25; i++) {
    const t = nowMs();
    await coll.get(other.id);
    unloaded.push(nowMs() - t);
  }
  const during: number[] = [];
  let done = false;
  const t1 = nowMs();
  const storm = Promise.all(Array.from({ length: WRITERS }, (_, i) => update(i))).finally(() => (done = true));
  const reads = (async () => {
    while (!done) {
      const t = nowMs();
      await coll.get(other.id);
      during.push(nowMs() - t);
      // A get the embedded store answers from memory (RecentObjects) never leaves the
      // microtask queue: without this turn the loop starved the storm's group commit
      // (it drains on setImmediate) and grew `during` until V8 gave up.
      await new Promise((r) => setImmediate(r));
    }
  })();
  await storm;
  const concurrent = (WRITERS / (nowMs() - t1)) * 1000;
  await reads;
  return { concurrent, sequential, getUnloaded: median(unloaded.slice(5)), getDuringMax: Math.max(...during) };
}

const rows: Row[] = [];
const details: Record<string, unknown> = {};
const perSec = (v: number) => `${num(v)}/s`;
const ms = (v: number) => `${num(v, 2)} ms`;
/** The creates each window times, counted from the store's first (the untimed warm-up included). */
const firstWindow = `${num(WARMUP + 1)}-${num(WARMUP + CREATES)}`;
const laterWindow = `${num(WARMUP + CREATES + 1)}-${num(WARMUP + 2 * CREATES)}`;
const work = mkdtempSync(join(tmpdir(), "quantix-bench-store-"));
const pgServer = await startPostgres();
try {
  const stores: [string, () => Promise<{ store: Store; db?: SqlDriver }>][] = [
    ["memory", async () => ({ store: new MemoryStore() })],
    ["embedded", async () => {
      const db = await PgliteDriver.open(join(work, "embedded"));
      await migrate(db, () => undefined);
      await db.exec(RAW_TABLE);
      return { store: await SqlStore.open(db, { historyRevisions: 100_000, maxBacklog: 100_000, pollMs: 1000, onError: () => undefined }), db };
    }],
    ["postgres", async () => {
      const db = await PgDriver.open(await pgServer.createDatabase("bench"), { maxConnections: 4, connectTimeoutMs: 5000, statementTimeoutMs: 60_000 });
      await migrate(db, () => undefined);
      await db.exec(RAW_TABLE);
      return { store: await SqlStore.open(db, { historyRevisions: 100_000, maxBacklog: 100_000, pollMs: 1000, onError: () => undefined }), db };
    }],
  ];
  for (const [name, open] of stores) {
    progress(`${name}: ${num(CREATES)} creates, then raw SQL inserts`);
    const { store, db } = await open();
    const c = await createRates(store, db);
    progress(`${name}: ${WRITERS} concurrent updates of one VM`);
    const u = await contention(store);
    progress(`${name}: loading ${num(LIST_ROWS)} VMs, then timing pages of ${PAGE}`);
    if (db) {
      await bulkLoad(db, "quantix_vms", LIST_ROWS);
      await bulkLoad(db, "bench_raw", LIST_ROWS);
    } else {
      for (let i = 0; i < LIST_ROWS; i++) await store.of(VM_KIND).create(vm(i, "list"));
    }
    const l = await listTimes(store, db);
    await store.close();
    details[name] = { creates: c, list: l, contention: u };
    rows.push(
      compare(`UpdateVM ${name}, ${WRITERS} at once on one VM (no version), updates/s`, u.concurrent, u.sequential, perSec, "the same one at a time"),
      compare(`GetVM ${name} of another VM during that, slowest, ms`, u.getDuringMax, u.getUnloaded, ms, "unloaded median"),
    );
    if (db) {
      rows.push(
        // Issue 19's two rows are PostgreSQL's; the embedded store's are measured alike, without a target.
        compare(`CreateVM in the ${name} store, creates/s (one at a time; creates ${laterWindow})`, c.later.ours, c.later.raw, perSec, "raw SQL INSERT", name === "postgres" ? ISSUE_19.postgresCreates : undefined),
        compare(`CreateVM in the ${name} store, creates/s (one at a time; a new store's ${firstWindow})`, c.first.ours, c.first.raw, perSec, "raw SQL INSERT"),
        compare(`CreateVM in the ${name} store, creates/s (${IN_FLIGHT} in flight)`, c.oursConcurrent, c.rawConcurrent, perSec, `raw SQL INSERT, ${IN_FLIGHT} in flight`),
        compare(`ListVMs ${name}, first page of ${PAGE} of ${num(LIST_ROWS)} + count, ms`, l.ours.first, l.raw.first, ms, "raw SQL keyset + count"),
        compare(`ListVMs ${name}, page at 90% of ${num(LIST_ROWS)}, ms`, l.ours.deep, l.raw.deep, ms, "raw SQL keyset", name === "postgres" ? ISSUE_19.postgresDeepPage : undefined),
      );
    } else {
      rows.push(
        absolute(`CreateVM in the ${name} store, creates/s (one at a time; creates ${laterWindow})`, c.later.ours, perSec),
        absolute(`CreateVM in the ${name} store, creates/s (one at a time; a new store's ${firstWindow})`, c.first.ours, perSec),
        absolute(`CreateVM in the ${name} store, creates/s (${IN_FLIGHT} in flight)`, c.oursConcurrent, perSec),
        absolute(`ListVMs ${name}, first page of ${PAGE} of ${num(LIST_ROWS)} + count, ms`, l.ours.first, ms),
        absolute(`ListVMs ${name}, page at 90% of ${num(LIST_ROWS)}, ms`, l.ours.deep, ms),
      );
    }
  }
} finally {
  await pgServer.stop();
  rmSync(work, { recursive: true, force: true });
}
const table = formatTable(rows);
process.stdout.write(`\n${table}\n\n`);
mkdirSync(RESULTS_DIR, { recursive: true });
const file = join(RESULTS_DIR, `store-${new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19)}Z.json`);
writeFileSync(file, JSON.stringify({ machine: machine(), rows: rows.map((r) => ({ row: r.row, ...(r.met ? { met: r.met } : {}), ...r.data })), details }, null, 2) + "\n");
progress(`results in ${file}`);
