import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VM_KIND } from "@quantix/core";
import { kindContract } from "../kind.contract.js";
import { storeContract } from "../store.contract.js";
import { fixtureVm } from "../store-fixtures.js";
import { migrate } from "./migrations.js";
import { PgliteDriver } from "./pglite-driver.js";
import type { SqlCollection } from "./sql-collection.js";
import { SqlStore } from "./sql-store.js";

/** A new embedded store in a temporary directory, removed on close. */
async function openEmbedded() {
  const dir = mkdtempSync(join(tmpdir(), "quantix-embedded-"));
  const driver = await PgliteDriver.open(dir);
  await migrate(driver, () => undefined);
  const store = await SqlStore.open(driver, { historyRevisions: 50, maxBacklog: 1000, pollMs: 500, onError: (e) => console.error(e) });
  return {
    store,
    close: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

storeContract("embedded (PGlite)", openEmbedded, { historySize: 50 });
kindContract("embedded (PGlite)", openEmbedded);

test("a watcher resuming from before the changes kept in memory reads the rest from the table, in order, then live ones", async () => {
  const dir = mkdtempSync(join(tmpdir(), "quantix-embedded-"));
  const driver = await PgliteDriver.open(dir);
  await migrate(driver, () => undefined);
  const store = await SqlStore.open(driver, { historyRevisions: 1000, memoryHistory: 10, maxBacklog: 1000, pollMs: 500, onError: (e) => console.error(e) });
  const controller = new AbortController();
  try {
    const vms = store.of(VM_KIND);
    const vm = await vms.create(fixtureVm());
    const from = vm.resourceVersion;
    for (let i = 0; i < 40; i++) await vms.update(vm.id, (v) => ((v.description = `update ${i}`), v));
    const hub = (vms as unknown as SqlCollection<VirtualMachine>).hub;
    assert.ok(hub.oldestResumable > from + 20n, `memory keeps the newest changes only (from ${hub.oldestResumable})`);

    const it = vms.watch(from, controller.signal)[Symbol.asyncIterator]();
    const seen: string[] = [];
    for (;;) {
      const { value, done } = await it.next();
      assert.ok(!done);
      if (value.type === "SYNCED") break;
      assert.equal(value.type, "MODIFIED");
      assert.equal(value.revision, from + BigInt(seen.length + 1), "every revision, none twice");
      seen.push(value.object!.description);
    }
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => `update ${i}`));
    await vms.update(vm.id, (v) => ((v.description = "live"), v));
    const live = await it.next();
    assert.equal(live.value?.object?.description, "live");
  } finally {
    controller.abort();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
