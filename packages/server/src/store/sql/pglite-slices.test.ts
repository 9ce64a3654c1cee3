import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { PGLITE_SLICE_MS, PgliteDriver } from "./pglite-driver.js";

// PGlite runs each statement synchronously in this thread: without slices, a long queue of
// statements kept timers and sockets waiting until the whole queue was done (a restart
// with 10,000 VMs opened its listener only after the controllers' first passes).

let dir: string;
let driver: PgliteDriver;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "quantix-pglite-slices-"));
  driver = await PgliteDriver.open(join(dir, "pg"));
});

after(async () => {
  await driver.close();
  rmSync(dir, { recursive: true, force: true });
});

it("lets a timer run while a long queue of statements is under way", async () => {
  const started = performance.now();
  let timerAt: number | undefined;
  let done = 0;
  let doneWhenTimerRan = -1;
  setTimeout(() => {
    timerAt = performance.now() - started;
    doneWhenTimerRan = done;
  }, 0);
  const statements = 3000;
  await Promise.all(
    Array.from({ length: statements }, (_, i) =>
      driver.query("SELECT $1::int AS n", [i]).then(() => {
        done++;
      }),
    ),
  );
  const total = performance.now() - started;
  assert.ok(timerAt !== undefined, "the timer ran");
  // The queue must take several slices for the test to say anything.
  assert.ok(total > 4 * PGLITE_SLICE_MS, `the ${statements} statements took ${total.toFixed(1)} ms, too few slices to judge`);
  assert.ok(doneWhenTimerRan < statements, `the timer waited for all ${statements} statements (${total.toFixed(1)} ms)`);
});

it("keeps the statements' order and results", async () => {
  const got = await Promise.all(Array.from({ length: 500 }, (_, i) => driver.query<{ n: number }>("SELECT $1::int AS n", [i])));
  assert.deepEqual(
    got.map((r) => r.rows[0]!.n),
    Array.from({ length: 500 }, (_, i) => i),
  );
});
