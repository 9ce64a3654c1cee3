import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { toBinary } from "@bufbuild/protobuf";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VM_KIND } from "@quantix/core";
import { startPostgres, type TestPostgres } from "@quantix/testing";
import { fixtureVm } from "../store-fixtures.js";
import { DecodedObjects } from "./decoded-objects.js";
import { migrate } from "./migrations.js";
import { PgDriver } from "./pg-driver.js";
import { SqlStore } from "./sql-store.js";

/** A decode that counts its calls (and tags each object it makes). */
function counting() {
  let calls = 0;
  const decode = (data: Uint8Array, version: bigint) => {
    calls++;
    return { id: `decoded-${calls}`, resourceVersion: version, bytes: data.length } as never as VirtualMachine;
  };
  return { decode, calls: () => calls };
}

describe("decoded objects", () => {
  it("hands out the object decoded before while the row's version and bytes are the same", () => {
    const cache = new DecodedObjects<VirtualMachine>(10);
    const { decode, calls } = counting();
    const first = cache.get("a", Uint8Array.of(1, 2, 3), 5n, decode);
    assert.equal(cache.get("a", Uint8Array.of(1, 2, 3), 5n, decode), first);
    assert.equal(calls(), 1);
  });

  it("decodes again when the row has a new version, or other bytes at the same version", () => {
    const cache = new DecodedObjects<VirtualMachine>(10);
    const { decode, calls } = counting();
    const first = cache.get("a", Uint8Array.of(1, 2, 3), 5n, decode);
    const newer = cache.get("a", Uint8Array.of(1, 2, 3), 6n, decode);
    assert.notEqual(newer, first);
    assert.equal(newer.resourceVersion, 6n);
    // A revision used twice (a database restored from a backup) with different contents.
    const other = cache.get("a", Uint8Array.of(1, 2, 4), 6n, decode);
    assert.notEqual(other, newer);
    assert.equal(calls(), 3);
    assert.equal(cache.get("a", Uint8Array.of(1, 2, 4), 6n, decode), other);
  });

  it("takes the bytes as the store reads them, in hex: the same row matches either way, other bytes do not", () => {
    const cache = new DecodedObjects<VirtualMachine>(10);
    const { decode, calls } = counting();
    const first = cache.get("a", "010203", 5n, decode);
    assert.equal(first.resourceVersion, 5n);
    assert.equal((first as unknown as { bytes: number }).bytes, 3, "decoded from the bytes the hex stands for");
    assert.equal(cache.get("a", "010203", 5n, decode), first);
    assert.equal(cache.get("a", Uint8Array.of(1, 2, 3), 5n, decode), first);
    assert.notEqual(cache.get("a", "010204", 5n, decode), first);
    assert.equal(calls(), 2);
  });

  it("keeps a copy of the bytes: a driver reusing its buffer cannot make a stale entry match", () => {
    const cache = new DecodedObjects<VirtualMachine>(10);
    const { decode, calls } = counting();
    const buf = Uint8Array.of(1, 2, 3);
    cache.get("a", buf, 5n, decode);
    buf[0] = 9;
    cache.get("a", buf, 5n, decode);
    assert.equal(calls(), 2);
  });

  it("holds at most its bound, dropping what was not read in the last two generations", () => {
    const cache = new DecodedObjects<VirtualMachine>(4);
    const { decode, calls } = counting();
    for (const id of ["a", "b", "c"]) cache.get(id, Uint8Array.of(1), 1n, decode);
    cache.get("a", Uint8Array.of(1), 1n, decode); // read again: young again
    assert.equal(calls(), 3);
    cache.get("d", Uint8Array.of(1), 1n, decode); // b was read least recently: dropped
    assert.ok(cache.size <= 4);
    cache.get("a", Uint8Array.of(1), 1n, decode);
    cache.get("d", Uint8Array.of(1), 1n, decode);
    assert.equal(calls(), 4);
    cache.get("b", Uint8Array.of(1), 1n, decode);
    assert.equal(calls(), 5);
    for (let i = 0; i < 100; i++) cache.get(`x${i}`, Uint8Array.of(1), 1n, decode);
    assert.ok(cache.size <= 4, `${cache.size} entries`);
  });
});

describe("decoded objects on PostgreSQL replicas", () => {
  let server: TestPostgres;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => server?.stop());

  async function replica(url: string): Promise<SqlStore> {
    const driver = await PgDriver.open(url, { maxConnections: 4, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
    await migrate(driver, () => undefined);
    return SqlStore.open(driver, { historyRevisions: 100, maxBacklog: 1000, pollMs: 60_000, onError: () => undefined });
  }

  it("a replica's reads see another replica's write as soon as it is acknowledged", async () => {
    const url = await server.createDatabase("decoded_replicas");
    const a = await replica(url);
    const b = await replica(url);
    try {
      const vm = await a.of(VM_KIND).create(fixtureVm());
      const q = { where: { project_id: vm.projectId }, order: { field: "name", desc: false }, limit: 10 } as const;
      // B reads it (and keeps what it decoded); reading again hands out the same object.
      const seen = (await b.of(VM_KIND).list(q)).items[0]!;
      assert.equal((await b.of(VM_KIND).list(q)).items[0], seen);
      assert.equal(await b.of(VM_KIND).get(vm.id), seen);
      // A writes; B's tailer does not poll in this test (pollMs 60 s), and B reads at once.
      const updated = await a.of(VM_KIND).update(vm.id, (cur) => Object.assign(cur, { labels: { tier: "gold" } }));
      const listed = (await b.of(VM_KIND).list(q)).items[0]!;
      assert.equal(listed.resourceVersion, updated.resourceVersion);
      assert.deepEqual(listed.labels, { tier: "gold" });
      const got = (await b.of(VM_KIND).get(vm.id))!;
      assert.equal(got.resourceVersion, updated.resourceVersion);
      assert.deepEqual(got.labels, { tier: "gold" });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a row rewritten at the same resource_version (a restore) is read as stored, not as cached", async () => {
    const url = await server.createDatabase("decoded_restore");
    const a = await replica(url);
    try {
      const vm = await a.of(VM_KIND).create(fixtureVm());
      assert.deepEqual((await a.of(VM_KIND).get(vm.id))!.labels, {});
      const changed = { ...vm, labels: { restored: "yes" }, resourceVersion: 0n } as VirtualMachine;
      await a.driver.query("UPDATE quantix_vms SET data = $1 WHERE id = $2", [toBinary(VirtualMachineSchema, changed), vm.id]);
      const got = (await a.of(VM_KIND).get(vm.id))!;
      assert.equal(got.resourceVersion, vm.resourceVersion);
      assert.deepEqual(got.labels, { restored: "yes" });
    } finally {
      await a.close();
    }
  });
});
