/**
 * The contract every Store implementation passes for every kind it keeps (STYLE rule 7),
 * driven by the kinds' declarations: filters, orders, unique keys, owned fields and
 * finalizers are read from each Kind, so a new kind is covered by adding its fixture
 * (kind-fixtures.ts). Transactions across kinds are here too. Tests share one store and
 * never assume it is empty.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { clone, type DescMessage } from "@bufbuild/protobuf";
import { compareCursor, QuantixError, sortKeyOf, type ErrorCode, type FieldDecl, type FieldValue, type Finalizable, type Kind, type Resource, type Store, type WatchEvent } from "@quantix/core";
import { KIND_FIXTURES, type KindFixture, type Values } from "./kind-fixtures.js";

const DEADLINE_MS = 5000;

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<QuantixError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof QuantixError, `expected a QuantixError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

/** A value of a field for the i-th object of a test: distinct per object for text and numbers. */
function valueFor(f: FieldDecl<Resource>, tag: string, i: number): FieldValue {
  switch (f.type) {
    case "text":
      return `${tag}-${String(i).padStart(3, "0")}`;
    case "int":
      return i + 1;
    case "bigint":
      return 1_700_000_000_000 + i * 1000;
    case "bool":
      return i % 2 === 0;
  }
}

/** Takes `n` events of a watch, each within the deadline. */
async function take<T>(it: AsyncIterator<WatchEvent<T>>, n: number): Promise<WatchEvent<T>[]> {
  const out: WatchEvent<T>[] = [];
  while (out.length < n) {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([it.next(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("no watch event in time")), DEADLINE_MS)))]).finally(() => clearTimeout(timer));
    if (r.done) assert.fail(`the watch ended after ${out.length} of ${n} events`);
    out.push(r.value);
  }
  return out;
}

const copyOf = <T extends Resource>(kind: Kind<T>, o: T): T => clone(kind.schema as DescMessage, o as never) as unknown as T;

/** Runs the kind contract against one store implementation. */
export function kindContract(name: string, open: () => Promise<{ store: Store; close(): Promise<void> }>): void {
  describe(`Kind contract: ${name}`, () => {
    let store: Store;
    let closeStore: () => Promise<void>;
    before(async () => {
      const opened = await open();
      store = opened.store;
      closeStore = () => opened.close();
    });
    after(async () => closeStore());

    for (const fx of KIND_FIXTURES) perKind(fx, () => store);
    transactions(() => store);
    ownedFields(() => store);
    finalizers(() => store);
  });
}

function perKind(fx: KindFixture, storeOf: () => Store): void {
  const kind = fx.kind;
  describe(`kind ${kind.name}`, () => {
    it("create, get, update and delete: new revisions, and the changes a watch sees", async () => {
      const store = storeOf();
      const c = store.of(kind);
      const from = await store.revision();
      const abort = new AbortController();
      const it = c.watch(from, abort.signal)[Symbol.asyncIterator]();
      try {
        const created = await c.create(fx.make({}));
        assert.ok(created.resourceVersion > from);
        assert.equal((await c.get(created.id))?.resourceVersion, created.resourceVersion);
        const updated = await c.update(created.id, (cur) => cur);
        assert.ok(updated.resourceVersion > created.resourceVersion);
        const last = await c.delete(created.id);
        assert.ok(last.resourceVersion > updated.resourceVersion);
        // The changes come in order; SYNCED falls wherever the watch caught up (before, or
        // after a replay of changes made before it was first read).
        const events = await take(it, 4);
        assert.deepEqual(events.filter((e) => e.type !== "SYNCED").map((e) => e.type), ["ADDED", "MODIFIED", "DELETED"]);
        assert.equal(events.filter((e) => e.type === "SYNCED").length, 1);
        assert.equal(await c.get(created.id), undefined);
        await rejectsWith(c.update(created.id, (cur) => cur), "not_found");
      } finally {
        abort.abort();
      }
    });

    it("an id is unique: ALREADY_EXISTS and nothing written", async () => {
      const c = storeOf().of(kind);
      const a = await c.create(fx.make({}));
      const twin = fx.make({});
      twin.id = a.id;
      const rev = await storeOf().revision();
      await rejectsWith(c.create(twin), "already_exists");
      assert.equal(await storeOf().revision(), rev);
    });

    it("the unique key is unique: ALREADY_EXISTS naming it, nothing written, and freed on delete", { skip: !kind.unique && `kind ${kind.name} declares no unique key` }, async () => {
      const c = storeOf().of(kind);
      const a = await c.create(fx.make({}));
      const twin = copyOf(kind, a);
      twin.id = randomUUID();
      const rev = await storeOf().revision();
      const err = await rejectsWith(c.create(twin), "already_exists");
      assert.equal(err.message, kind.unique!.describe(twin));
      assert.equal(await storeOf().revision(), rev);
      await c.delete(a.id);
      assert.equal((await c.create(twin)).id, twin.id);
    });

    for (const [field, f] of Object.entries(kind.fields).filter(([, f]) => f.filter)) {
      it(`filters by ${field} (${f.filter})`, async () => {
        const c = storeOf().of(kind);
        const tag = `f${randomUUID().slice(0, 8)}`;
        const scope = fx.scope(tag);
        const objs: Resource[] = [];
        for (let i = 0; i < 3; i++) objs.push(await c.create(fx.make({ ...scope.values, [field]: valueFor(f, tag, i) }, scope.labels)));
        const base = { where: { ...scope.where }, labels: scope.labelFilter };
        const scoped = (v: FieldValue | readonly FieldValue[]) => ({ ...base, where: { ...base.where, [field]: v } });
        const ids = async (where: ReturnType<typeof scoped>) => (await c.list({ ...where, order: { field: kind.orderBy[0]!, desc: false }, limit: 100 })).items.map((o) => o.id).sort();
        const want = (pred: (o: Resource) => boolean) => objs.filter(pred).map((o) => o.id).sort();
        const v0 = f.value(objs[0]!);
        assert.deepEqual(await ids(scoped(v0)), want((o) => f.value(o) === v0));
        if (f.filter === "in") {
          const v1 = f.value(objs[1]!);
          assert.deepEqual(await ids(scoped([v0, v1])), want((o) => f.value(o) === v0 || f.value(o) === v1));
        }
        const page = await c.list({ ...scoped(v0), order: { field: kind.orderBy[0]!, desc: false }, limit: 0 });
        assert.equal(page.totalCount, want((o) => f.value(o) === v0).length);
        assert.equal(page.items.length, 0);
      });
    }

    it("filters by id: one id, or any of a list (counted and paged); an empty list matches nothing", async () => {
      const c = storeOf().of(kind);
      const objs: Resource[] = [];
      for (let i = 0; i < 4; i++) objs.push(await c.create(fx.make({})));
      const field = kind.orderBy[0]!;
      const order = { field, desc: false };
      const one = await c.list({ where: { id: objs[0]!.id }, order, limit: 10 });
      assert.deepEqual(one.items.map((o) => o.id), [objs[0]!.id]);
      assert.equal(one.totalCount, 1);
      const three = objs.slice(0, 3).map((o) => o.id).sort();
      const all = await c.list({ where: { id: three }, order, limit: 10 });
      assert.deepEqual(all.items.map((o) => o.id).sort(), three);
      assert.equal(all.totalCount, 3);
      // Two pages of two and one, each object once.
      const first = await c.list({ where: { id: three }, order, limit: 2 });
      assert.equal(first.hasMore, true);
      const last = first.items[1]!;
      const second = await c.list({ where: { id: three }, order, limit: 2, after: { key: sortKeyOf(kind, last, field), id: last.id }, countTotal: false });
      assert.equal(second.hasMore, false);
      assert.deepEqual([...first.items, ...second.items].map((o) => o.id).sort(), three);
      const none = await c.list({ where: { id: [] }, order, limit: 10 });
      assert.deepEqual([none.items.length, none.totalCount], [0, 0]);
    });

    it("filters by labels: all pairs must match", { skip: !kind.labels && `kind ${kind.name} has no labels` }, async () => {
      const c = storeOf().of(kind);
      const tag = `l${randomUUID().slice(0, 8)}`;
      const a = await c.create(fx.make({}, { t: tag, zone: "a" }));
      await c.create(fx.make({}, { t: tag, zone: "b" }));
      const page = await c.list({ labels: { t: tag, zone: "a" }, order: { field: kind.orderBy[0]!, desc: false }, limit: 10 });
      assert.deepEqual(page.items.map((o) => o.id), [a.id]);
    });

    for (const [field, f] of Object.entries(kind.fields).filter(([, x]) => x.type === "bigint")) {
      it(`a range on ${field} keeps what is at least its min and below its max`, async () => {
        const c = storeOf().of(kind);
        const tag = `r${randomUUID().slice(0, 8)}`;
        const scope = fx.scope(tag);
        const objs: Resource[] = [];
        for (let i = 0; i < 3; i++) objs.push(await c.create(fx.make({ ...scope.values, [field]: valueFor(f, tag, i) }, scope.labels)));
        const page = await c.list({ where: scope.where, labels: scope.labelFilter, range: { [field]: { min: valueFor(f, tag, 1) as number, max: valueFor(f, tag, 2) as number } }, order: { field: kind.orderBy[0]!, desc: false }, limit: 10 });
        assert.deepEqual(page.items.map((o) => o.id), [objs[1]!.id]);
        assert.equal(page.totalCount, 1);
        const open = await c.list({ where: scope.where, labels: scope.labelFilter, range: { [field]: { min: valueFor(f, tag, 1) as number } }, order: { field: kind.orderBy[0]!, desc: false }, limit: 10 });
        assert.equal(open.totalCount, 2);
      });
    }

    for (const field of kind.orderBy) {
      for (const desc of [false, true]) {
        it(`pages in ${field} ${desc ? "desc" : "asc"} order, each object once, ties broken by id`, async () => {
          const c = storeOf().of(kind);
          const tag = `o${randomUUID().slice(0, 8)}`;
          const scope = fx.scope(tag);
          const f = kind.fields[field]!;
          const objs: Resource[] = [];
          // Time orders get ties (three objects per value) so the id decides between them.
          for (let i = 0; i < 7; i++) objs.push(await c.create(fx.make({ ...scope.values, [field]: valueFor(f, tag, f.type === "bigint" ? i % 3 : i) }, scope.labels)));
          const pos = (o: Resource) => ({ key: sortKeyOf(kind, o, field), id: o.id });
          const expected = [...objs].sort((a, b) => (desc ? -1 : 1) * compareCursor(pos(a), pos(b))).map((o) => o.id);
          const seen: string[] = [];
          let after: { key: string | number; id: string } | undefined;
          for (let guard = 0; guard < 10; guard++) {
            const page = await c.list({ where: scope.where, labels: scope.labelFilter, order: { field, desc }, after, limit: 3 });
            seen.push(...page.items.map((o) => o.id));
            const last = page.items[page.items.length - 1];
            if (!page.hasMore || !last) break;
            after = pos(last);
          }
          assert.deepEqual(seen, expected);
        });
      }
    }
  });
}

function transactions(storeOf: () => Store): void {
  const [vmFx, nodeFx, eventFx] = KIND_FIXTURES;
  describe("transactions across kinds", () => {
    it("commit writes objects of several kinds atomically, with consecutive revisions", async () => {
      const store = storeOf();
      const before = await store.revision();
      const [a, b] = await store.commit([
        { op: "create", kind: vmFx!.kind, object: vmFx!.make({}) },
        { op: "create", kind: eventFx!.kind, object: eventFx!.make({}) },
      ]);
      assert.equal(a!.resourceVersion, before + 1n);
      assert.equal(b!.resourceVersion, before + 2n);
      assert.ok(await store.of(vmFx!.kind).get(a!.id));
      assert.ok(await store.of(eventFx!.kind).get(b!.id));
    });

    it("a failing write undoes the whole transaction: nothing written, no revision used", async () => {
      const store = storeOf();
      const taken = await store.of(nodeFx!.kind).create(nodeFx!.make({}));
      const clash = copyOf(nodeFx!.kind, taken);
      clash.id = randomUUID();
      const fresh = vmFx!.make({});
      const before = await store.revision();
      await rejectsWith(store.commit([
        { op: "create", kind: vmFx!.kind, object: fresh },
        { op: "create", kind: nodeFx!.kind, object: clash },
      ]), "already_exists");
      assert.equal(await store.revision(), before);
      assert.equal(await store.of(vmFx!.kind).get(fresh.id), undefined);
    });

    it("an update or delete of an object that changed since it was read is ABORTED, and nothing is written", async () => {
      const store = storeOf();
      const vms = store.of(vmFx!.kind);
      const read = await vms.create(vmFx!.make({}));
      await vms.update(read.id, (cur) => cur);
      const other = eventFx!.make({});
      const before = await store.revision();
      await rejectsWith(store.commit([{ op: "create", kind: eventFx!.kind, object: other }, { op: "update", kind: vmFx!.kind, object: read }]), "aborted");
      await rejectsWith(store.commit([{ op: "delete", kind: vmFx!.kind, object: read }]), "aborted");
      assert.equal(await store.revision(), before);
      assert.equal(await store.of(eventFx!.kind).get(other.id), undefined);
    });

    it("an update with mutate reads the stored object under the commit: concurrent counters never lose a write, and a refusal undoes the commit", async () => {
      const store = storeOf();
      const vms = store.of(vmFx!.kind);
      const counter = await vms.create(vmFx!.make({}, { n: "0" }));
      const bump = (o: Resource): Resource | undefined => {
        const c = o as Resource & { labels: Record<string, string> };
        const n = Number(c.labels["n"]);
        if (n >= 30) throw new QuantixError("resource_exhausted", "counter full");
        c.labels = { ...c.labels, n: String(n + 1) };
        return c;
      };
      // 40 commits at once, each an event and a bump: exactly 30 fit.
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, () => store.commit([{ op: "update", kind: vmFx!.kind, object: { id: counter.id, resourceVersion: 0n }, mutate: bump }, { op: "create", kind: eventFx!.kind, object: eventFx!.make({ object_id: counter.id }) }])),
      );
      const ok = results.filter((r) => r.status === "fulfilled").length;
      const refused = results.filter((r) => r.status === "rejected" && r.reason instanceof QuantixError && r.reason.code === "resource_exhausted").length;
      assert.deepEqual([ok, refused], [30, 10]);
      const after = (await vms.get(counter.id)) as Resource & { labels: Record<string, string> };
      assert.equal(after.labels["n"], "30");
      const events = await store.of(eventFx!.kind).list({ where: { object_id: counter.id }, order: { field: "time", desc: false }, limit: 100 });
      assert.equal(events.totalCount, 30, "a refused commit writes nothing");
      // Returning undefined changes nothing; a stale version is ABORTED; a missing object NOT_FOUND.
      const before = await store.revision();
      const [same] = await store.commit([{ op: "update", kind: vmFx!.kind, object: { id: counter.id, resourceVersion: 0n }, mutate: () => undefined }]);
      assert.equal(same!.resourceVersion, after.resourceVersion);
      assert.equal(await store.revision(), before);
      await rejectsWith(store.commit([{ op: "update", kind: vmFx!.kind, object: { id: counter.id, resourceVersion: counter.resourceVersion }, mutate: bump }]), "aborted");
      await rejectsWith(store.commit([{ op: "update", kind: vmFx!.kind, object: { id: randomUUID(), resourceVersion: 0n }, mutate: bump }]), "not_found");
    });

    it("transact runs again on fresh reads when what it read changed before its commit", async () => {
      const store = storeOf();
      const vms = store.of(vmFx!.kind);
      const vm = await vms.create(vmFx!.make({}));
      let runs = 0;
      const { result, written } = await store.transact(async (tx) => {
        runs++;
        const cur = (await tx.get(vmFx!.kind, vm.id))!;
        // A concurrent writer, the first time only.
        if (runs === 1) await vms.update(vm.id, (x) => x);
        tx.update(vmFx!.kind, copyOf(vmFx!.kind, cur));
        tx.create(eventFx!.kind, eventFx!.make({ object_id: vm.id }));
        return cur.resourceVersion;
      });
      assert.equal(runs, 2);
      assert.ok(result > vm.resourceVersion);
      assert.equal(written.length, 2);
      assert.equal(written[1]!.resourceVersion, written[0]!.resourceVersion + 1n);
    });

    it("watchers of each kind see their part of a transaction", async () => {
      const store = storeOf();
      const from = await store.revision();
      const abort = new AbortController();
      const vmsW = store.of(vmFx!.kind).watch(from, abort.signal)[Symbol.asyncIterator]();
      const evW = store.of(eventFx!.kind).watch(from, abort.signal)[Symbol.asyncIterator]();
      try {
        const [vm, ev] = await store.commit([
          { op: "create", kind: vmFx!.kind, object: vmFx!.make({}) },
          { op: "create", kind: eventFx!.kind, object: eventFx!.make({}) },
        ]);
        const v = (await take(vmsW, 2)).filter((e) => e.type !== "SYNCED");
        const e = (await take(evW, 2)).filter((e) => e.type !== "SYNCED");
        assert.equal(v[0]!.type === "ADDED" && v[0]!.object.id, vm!.id);
        assert.equal(e[0]!.type === "ADDED" && e[0]!.object.id, ev!.id);
      } finally {
        abort.abort();
      }
    });
  });
}

function ownedFields(storeOf: () => Store): void {
  const fx = KIND_FIXTURES.find((f) => (f.kind.owned ?? []).length > 0);
  describe("owned fields", () => {
    it("a change to an owned field by another writer is refused (INTERNAL) and changes nothing; its owner may", { skip: !fx && "no kind declares owned fields" }, async () => {
      const kind = fx!.kind;
      const owned = kind.owned![0]!;
      const c = storeOf().of(kind);
      const a = await c.create(fx!.make({}));
      // Find a field value that differs: the fixtures make owned fields empty.
      const before = owned.value(a);
      const changed = (o: Resource) => {
        // VM status.node_id is the only owned kind field today; a new one extends this.
        (o as unknown as { status: { nodeId: string; migrationTargetNodeId: string } }).status.nodeId = `n-${randomUUID()}`;
        (o as unknown as { status: { nodeId: string; migrationTargetNodeId: string } }).status.migrationTargetNodeId = `n-${randomUUID()}`;
        return o;
      };
      const err = await rejectsWith(c.update(a.id, changed), "internal");
      assert.match(err.message, new RegExp(`${owned.path.replace(".", "\\.")} of ${kind.name} '${a.id}' is written only by ${owned.owners[0]}`));
      assert.deepEqual(owned.value((await c.get(a.id))!), before);
      await rejectsWith(c.update(a.id, changed, { actor: "someone-else" }), "internal");
      const ok = await c.update(a.id, changed, { actor: owned.owners[0]! });
      assert.notDeepEqual(owned.value(ok), before);
      const tx = copyOf(kind, ok);
      await rejectsWith(storeOf().commit([{ op: "update", kind, object: changed(tx) }]), "internal");
    });
  });
}

function finalizers(storeOf: () => Store): void {
  const fx = KIND_FIXTURES.find((f) => f.kind.finalizers && f.kind.finalizers.length > 0);
  describe("finalizers", () => {
    it("delete marks an object that has finalizers; removing the last one deletes it", { skip: !fx && "no kind declares finalizers yet" }, async () => {
      const kind = fx!.kind;
      const c = storeOf().of(kind);
      const idle = await c.create(fx!.make({}));
      assert.deepEqual((idle as unknown as Finalizable).finalizers, [...kind.finalizers!]);
      if (kind.pendingFinalizers?.(idle).length === 0) {
        const last = await c.delete(idle.id);
        assert.equal(await c.get(idle.id), undefined, "an object whose finalizers have nothing to do goes at once");
        assert.equal(last.id, idle.id);
      }
      const a = await c.create(fx!.make(fx!.busy ?? {}));
      const marked = await c.delete(a.id);
      assert.ok((marked as unknown as Finalizable).deletionRequestedAt, "deletion_requested_at is set");
      assert.ok(await c.get(a.id), "it stays while finalizers remain");
      const again = await c.delete(a.id);
      assert.equal(again.resourceVersion, marked.resourceVersion, "a second delete changes nothing");
      const unmarked = await c.update(a.id, (cur) => {
        delete (cur as unknown as Finalizable).deletionRequestedAt;
        return cur;
      });
      assert.ok((unmarked as unknown as Finalizable).deletionRequestedAt, "an update cannot take the deletion back");
      await c.update(a.id, (cur) => {
        (cur as unknown as Finalizable).finalizers = [];
        return cur;
      });
      assert.equal(await c.get(a.id), undefined, "gone once its finalizers are removed");
    });
  });
}

export type { Values };
