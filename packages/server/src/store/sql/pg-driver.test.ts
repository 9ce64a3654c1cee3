import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { QuantixError } from "@quantix/core";
import { startPostgres, type TestPostgres } from "@quantix/testing";
import { PgDriver } from "./pg-driver.js";

// The pool's connections are taken in turns: a burst of work longer than the connect
// timeout waits for a free connection instead of failing as "the database is
// unavailable" (node-postgres's pool applies its connect timeout to its queue too), and a
// wait past its own bound says the connections were busy and what to raise.

let pg: TestPostgres;
let url: string;
before(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase("driver_turns");
});
after(() => pg?.stop());

test("a burst of statements longer than the connect timeout all succeed, two at a time", async () => {
  const driver = await PgDriver.open(url, { maxConnections: 2, connectTimeoutMs: 300, statementTimeoutMs: 30_000 });
  try {
    // 24 statements of 50 ms on 2 connections take about 600 ms: twice the connect timeout.
    const started = Date.now();
    const results = await Promise.allSettled(Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? driver.transaction((tx) => tx.query("SELECT pg_sleep(0.05)")) : driver.query("SELECT pg_sleep(0.05)"))));
    const failed = results.filter((r) => r.status === "rejected");
    assert.deepEqual(failed, [], String((failed[0] as PromiseRejectedResult | undefined)?.reason));
    assert.ok(Date.now() - started >= 550, "the statements ran two at a time");
    const { rows } = await driver.query<{ n: string }>("SELECT count(*)::text AS n FROM pg_stat_activity WHERE application_name = 'quantix'");
    assert.ok(Number(rows[0]!.n) <= 2, `at most 2 pool connections, saw ${rows[0]!.n}`);
  } finally {
    await driver.close();
  }
});

test("a wait for a connection past its bound is UNAVAILABLE naming the busy connections and the setting", async () => {
  const driver = await PgDriver.open(url, { maxConnections: 1, connectTimeoutMs: 5000, statementTimeoutMs: 30_000, queueTimeoutMs: 200 });
  try {
    const slow = driver.query("SELECT pg_sleep(1)");
    await assert.rejects(driver.query("SELECT 1"), (err: unknown) => {
      assert.ok(err instanceof QuantixError);
      assert.equal(err.code, "unavailable");
      assert.match(err.message, /all 1 connections to the database stayed busy for 0\.2 s; retry, or raise QUANTIX_PG_MAX_CONNECTIONS/);
      return true;
    });
    await slow;
    // The turn given back, the next statement runs.
    assert.equal((await driver.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one, 1);
  } finally {
    await driver.close();
  }
});
