import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type WatchEvent, VM_KIND } from "@quantix/core";
import { startPostgres, until, type TestPostgres } from "@quantix/testing";
import { fixtureVm } from "../store-fixtures.js";
import { migrate } from "./migrations.js";
import { PgDriver } from "./pg-driver.js";
import type { Param, SqlDriver } from "./sql-driver.js";
import { SqlStore } from "./sql-store.js";

// Watches on one replica while another writes: resumes from the database's history never
// skip a revision, a replica cut off for longer than the retention tells its watchers
// (OUT_OF_RANGE) instead of leaving a gap, and so does a database that went back.

const LIMITS = { maxConnections: 4, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 };
const RETENTION = 10;

/** A driver whose queries (or only its transactions) wait while `closed`: a replica cut off, or a slow read. */
class GatedDriver {
  closed = false;
  private waiters: (() => void)[] = [];
  constructor(
    readonly inner: SqlDriver,
    private readonly only: "all" | "transactions" = "all",
  ) {}
  get waiting(): number {
    return this.waiters.length;
  }
  open(): void {
    this.closed = false;
    for (const w of this.waiters.splice(0)) w();
  }
  private async gate(): Promise<void> {
    if (this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }
  asDriver(): SqlDriver {
    const inner = this.inner;
    return {
      kind: inner.kind,
      query: async (sql: string, params?: readonly Param[]) => (this.only === "all" && (await this.gate()), inner.query(sql, params)),
      exec: (sql: string) => inner.exec(sql),
      transaction: async (fn, o) => (await this.gate(), inner.transaction(fn, o)),
      withAdvisoryLock: (k, fn) => inner.withAdvisoryLock(k, fn),
      listen: (c, n, l) => inner.listen(c, n, l),
      campaign: (k, c) => inner.campaign(k, c),
      close: () => inner.close(),
    } as SqlDriver;
  }
}

async function openReplica(url: string, wrap?: (d: SqlDriver) => SqlDriver, historyRevisions = RETENTION, pollMs = 200): Promise<SqlStore> {
  const driver = await PgDriver.open(url, LIMITS);
  await migrate(driver, () => undefined);
  return SqlStore.open(wrap ? wrap(driver) : driver, { historyRevisions, maxBacklog: 10_000, pollMs, onError: () => undefined });
}

/** A driver that counts its reads of the change history (the tailer's). */
function countingHistoryReads(inner: SqlDriver): { driver: SqlDriver; reads: () => number } {
  let reads = 0;
  const driver = Object.create(inner) as SqlDriver;
  driver.query = (sql, params, options) => {
    if (/FROM quantix_changes/.test(sql) && !/^\s*(WITH|INSERT|DELETE)/.test(sql)) reads++;
    return inner.query(sql, params, options);
  };
  return { driver, reads: () => reads };
}

/** Drains a watch until SYNCED plus `extra` changes, or its error. */
async function drain(store: SqlStore, from: bigint, until: (e: WatchEvent<VirtualMachine>[]) => boolean): Promise<{ events: WatchEvent<VirtualMachine>[]; error?: unknown }> {
  const abort = new AbortController();
  const events: WatchEvent<VirtualMachine>[] = [];
  const timer = setTimeout(() => abort.abort(), 10_000);
  try {
    for await (const e of store.of(VM_KIND).watch(from, abort.signal)) {
      events.push(e);
      if (until(events)) break;
    }
    return { events };
  } catch (error) {
    return { events, error };
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
}

describe("watching one replica while another writes", () => {
  let server: TestPostgres;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => server?.stop());

  it("a replica's own writes are published without reading them back, another replica's still reach its watchers", async () => {
    const url = await server.createDatabase("own_writes");
    let counted: ReturnType<typeof countingHistoryReads> | undefined;
    // No periodic poll: only notifications wake the tailers.
    const a = await openReplica(url, (d) => (counted = countingHistoryReads(d)).driver, 1000, 600_000);
    const b = await openReplica(url, undefined, 1000, 600_000);
    try {
      const from = await a.revision();
      await until(() => (counted!.reads() > 0 ? true : undefined), "A's first read of the history");
      const before = counted!.reads();
      // One at a time: each commit's NOTIFY reaches A's listening connection around the
      // time its result does (often first). None of them needs a read of the history.
      for (let i = 0; i < 100; i++) await a.of(VM_KIND).create(fixtureVm());
      assert.equal(counted!.reads() - before, 0, "A read its own writes back from the history");
      // B writes while A keeps writing: A's watchers get every revision, in order.
      const watching = drain(a, from, (e) => e.filter((x) => x.type !== "SYNCED").length >= 140);
      await Promise.all([
        (async () => {
          for (let i = 0; i < 20; i++) await b.of(VM_KIND).create(fixtureVm());
        })(),
        (async () => {
          for (let i = 0; i < 20; i++) await a.of(VM_KIND).create(fixtureVm());
        })(),
      ]);
      const { events, error } = await watching;
      assert.equal(error, undefined);
      const revs = events.filter((e) => e.type !== "SYNCED").map((e) => e.revision);
      const expected = Array.from({ length: 140 }, (_, i) => from + 1n + BigInt(i));
      assert.deepEqual(revs, expected, "A's watch missed or reordered a revision");
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a resume from the database's history while the hub compacts is complete or OUT_OF_RANGE, never a gap", async () => {
    const url = await server.createDatabase("resume_race");
    // A (the writer, which compacts the table) keeps a long history; B's hub keeps a short one.
    const a = await openReplica(url, undefined, 1000);
    let gated: GatedDriver | undefined;
    const first = await a.of(VM_KIND).create(fixtureVm());
    const b = await openReplica(url, (d) => (gated = new GatedDriver(d, "transactions")).asDriver());
    try {
      const start = b.of(VM_KIND).hub.oldestResumable;
      // B's read of the older history is held while A's writes reach B's hub and it compacts.
      gated!.closed = true;
      const watching = drain(b, first.resourceVersion - 1n, (e) => e.some((x) => x.type === "SYNCED"));
      await until(() => (gated!.waiting > 0 ? true : undefined), "the history read to start");
      for (let i = 0; i < 3 * RETENTION; i++) await a.of(VM_KIND).create(fixtureVm());
      await until(() => (b.of(VM_KIND).hub.oldestResumable > start ? true : undefined), "B's hub to compact");
      gated!.open();
      const { events, error } = await watching;
      if (error) {
        assert.ok(error instanceof QuantixError && error.code === "out_of_range", String(error));
        return;
      }
      const revs = events.filter((e) => e.type !== "SYNCED").map((e) => e.revision);
      const synced = events.find((e) => e.type === "SYNCED")!.revision;
      const expected: bigint[] = [];
      for (let r = first.resourceVersion; r <= synced; r++) expected.push(r);
      assert.deepEqual(revs, expected, "the resumed watch has a gap or a duplicate");
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a replica cut off for longer than the retention ends its watchers with OUT_OF_RANGE", async () => {
    const url = await server.createDatabase("lagging");
    const a = await openReplica(url);
    let gated: GatedDriver | undefined;
    const b = await openReplica(url, (d) => (gated = new GatedDriver(d)).asDriver());
    try {
      const abort = new AbortController();
      const it = b.of(VM_KIND).watch(await b.revision(), abort.signal)[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.type, "SYNCED");
      gated!.closed = true;
      for (let i = 0; i < 4 * RETENTION; i++) await a.of(VM_KIND).create(fixtureVm());
      await a.compactor.compact();
      gated!.open();
      await assert.rejects(
        (async () => {
          for (;;) if ((await it.next()).done) return;
        })(),
        (e: unknown) => e instanceof QuantixError && e.code === "out_of_range" && /fell behind the retention/.test(e.message),
      );
      abort.abort();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a database that went back (a restore) ends watchers with OUT_OF_RANGE", async () => {
    const url = await server.createDatabase("rewound");
    const a = await openReplica(url);
    try {
      for (let i = 0; i < 5; i++) await a.of(VM_KIND).create(fixtureVm());
      const abort = new AbortController();
      const it = a.of(VM_KIND).watch(await a.revision(), abort.signal)[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.type, "SYNCED");
      await a.driver.query("UPDATE quantix_meta SET revision = revision - 3 WHERE id = 1");
      await assert.rejects(
        (async () => {
          for (;;) if ((await it.next()).done) return;
        })(),
        (e: unknown) => e instanceof QuantixError && e.code === "out_of_range" && /older than revision/.test(e.message),
      );
      abort.abort();
    } finally {
      await a.close();
    }
  });
});
