/**
 * The contract every Store implementation passes (STYLE rule 7: one shared suite per port).
 * It tests only what the port in @quantix/core promises, so the memory, embedded and
 * PostgreSQL stores can all run it. Tests share one store per suite and never assume it is
 * empty: each uses fresh ids, names and project ids, and revisions relative to its start.
 * It is over 400 lines because it enumerates every promise of the port in one place.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, NodeStatus_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { DiskDeviceSchema, VirtualMachineSchema, VmStatus_State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, sortKeyOf, type FilterValue, type ChangeEvent, type Cursor, type ErrorCode, type ListPage, type Order, type Store, type WatchEvent, type Kind, type Resource, VM_KIND, NODE_KIND } from "@quantix/core";

/** The VM kind as Store.commit takes kinds. */
const anyVm = VM_KIND as unknown as Kind<Resource>;

/** How long any single wait may take before the test fails instead of hanging. */
const DEADLINE_MS = 5000;
/** A fixed creation time, so created_at orders are deterministic. */
const BASE_MS = 1_700_000_000_000;

let seq = 0;
/** A name part no other test (or earlier run against a durable store) uses. */
function uniq(): string {
  seq += 1;
  return `t${seq}x${randomUUID().slice(0, 8)}`;
}

interface VmInit {
  projectId?: string;
  name?: string;
  labels?: Record<string, string>;
  state?: VmStatus_State;
  nodeId?: string;
  createdMs?: number;
}

function newVm(init: VmInit = {}): VirtualMachine {
  return create(VirtualMachineSchema, {
    id: randomUUID(),
    projectId: init.projectId ?? randomUUID(),
    name: init.name ?? `vm${uniq()}`,
    labels: init.labels ?? {},
    spec: { cpu: { cores: 2 }, memory: { sizeMib: 2048n }, disks: [{ id: "root", sizeGib: 20n }] },
    status: { state: init.state ?? VmStatus_State.PENDING, nodeId: init.nodeId ?? "" },
    createdAt: timestampFromMs(init.createdMs ?? BASE_MS),
    updatedAt: timestampFromMs(init.createdMs ?? BASE_MS),
    generation: 1n,
  });
}

interface NodeInit {
  hostname?: string;
  labels?: Record<string, string>;
  phase?: NodeStatus_Phase;
  schedulable?: boolean;
  createdMs?: number;
}

function newNode(init: NodeInit = {}): Node {
  return create(NodeSchema, {
    id: randomUUID(),
    hostname: init.hostname ?? `h${uniq()}`,
    managementIp: "10.0.0.1",
    labels: init.labels ?? {},
    spec: { schedulable: init.schedulable ?? true, cpu: { logicalCpus: 16 }, memory: { totalMib: 65536n } },
    status: { phase: init.phase ?? NodeStatus_Phase.READY },
    createdAt: timestampFromMs(init.createdMs ?? BASE_MS),
  });
}

function withDeadline<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Asserts that `run` rejects with a QuantixError of `code`. */
async function rejectsWith(run: () => Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(withDeadline(run(), `${code} error`), (e: unknown) => {
    assert.ok(e instanceof QuantixError, `expected a QuantixError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

type Watchable<T> = { watch(from: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<T>> };

/** Every watch a test opens; aborted after each test so none outlives it. */
const openWatches = new Set<AbortController>();

/** Pulls a watch's events one at a time, each within the deadline. */
class Watcher<T> {
  private readonly controller = new AbortController();
  private readonly it: AsyncIterator<WatchEvent<T>>;

  constructor(repo: Watchable<T>, from: bigint) {
    openWatches.add(this.controller);
    this.it = repo.watch(from, this.controller.signal)[Symbol.asyncIterator]();
  }

  next(): Promise<IteratorResult<WatchEvent<T>>> {
    return withDeadline(this.it.next(), "watch event");
  }

  /** The next `n` events; fails if the watch ends or stalls first. */
  async take(n: number): Promise<WatchEvent<T>[]> {
    const out: WatchEvent<T>[] = [];
    while (out.length < n) {
      const r = await this.next();
      if (r.done) assert.fail(`the watch ended after ${out.length} of ${n} events`);
      out.push(r.value);
    }
    return out;
  }

  /** The next event, which must be a change (not SYNCED). */
  async change(): Promise<ChangeEvent<T>> {
    const [e] = await this.take(1);
    assert.ok(e && e.type !== "SYNCED", `expected a change, got ${e?.type}`);
    return e;
  }

  abort(): void {
    this.controller.abort();
  }
}

/** A compact, comparable view of watch events: type, id and revision. */
function summary<T extends { id: string }>(events: readonly WatchEvent<T>[]): string[] {
  return events.map((e) => (e.type === "SYNCED" ? `SYNCED@${e.revision}` : `${e.type}:${e.object.id}@${e.revision}`));
}

/** Runs a mutation of a returned object, accepting that a read-only object refuses it. */
function tryMutate(change: () => unknown): void {
  try {
    change();
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
  }
}

/**
 * Runs the Store contract against one implementation. `open` returns a ready store (it may
 * hold data from earlier tests); `historySize`, when given, is how many changes the store
 * keeps for resuming watchers.
 */
export function storeContract(
  name: string,
  open: () => Promise<{ store: Store; close(): Promise<void> }>,
  opts: { historySize?: number } = {},
): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let closeStore: () => Promise<void>;

    before(async () => {
      const opened = await open();
      store = opened.store;
      closeStore = () => opened.close();
    });
    after(async () => closeStore());
    afterEach(() => {
      for (const c of openWatches) c.abort();
      openWatches.clear();
    });

    describe("create and get", () => {
      it("create stores the object with a new resource_version, and get returns it", async () => {
        const input = newVm({ labels: { app: "web" } });
        const before = await store.revision();
        const created = await store.of(VM_KIND).create(input);
        assert.ok(created.resourceVersion > before);
        assert.equal(await store.revision(), created.resourceVersion);
        const got = await store.of(VM_KIND).get(input.id);
        assert.ok(got);
        assert.equal(got.name, input.name);
        assert.deepEqual(got.labels, { app: "web" });
        assert.equal(got.spec?.cpu?.cores, 2);
        assert.equal(got.resourceVersion, created.resourceVersion);
      });

      it("copies its input and hands out read-only objects: no change by a caller reaches the store", async () => {
        const input = newVm({ labels: { app: "web" } });
        const created = await store.of(VM_KIND).create(input);
        input.name = "changed";
        input.labels["app"] = "changed";
        input.spec!.cpu!.cores = 99;
        // Returned objects may be frozen (mutation throws) or copies (mutation is lost): either way nothing stored changes.
        tryMutate(() => (created.labels["app"] = "changed"));
        tryMutate(() => (created.spec!.cpu!.cores = 98));
        const got = await store.of(VM_KIND).get(input.id);
        tryMutate(() => (got!.labels["extra"] = "x"));
        tryMutate(() => (got!.spec!.memory!.sizeMib = 1n));
        const [listed] = (await store.of(VM_KIND).list({ where: { project_id: input.projectId }, order: { field: "name", desc: false }, limit: 10 })).items;
        tryMutate(() => listed!.spec!.disks.push(create(DiskDeviceSchema, { id: "extra", sizeGib: 1n })));
        const again = await store.of(VM_KIND).get(input.id);
        assert.equal(again?.name, created.name);
        assert.deepEqual(again?.labels, { app: "web" });
        assert.equal(again?.spec?.cpu?.cores, 2);
        assert.equal(again?.spec?.memory?.sizeMib, 2048n);
        assert.equal(again?.spec?.disks.length, 1);
      });

      it("assigns increasing resource_versions from one sequence shared by VMs and nodes", async () => {
        const a = await store.of(VM_KIND).create(newVm());
        const b = await store.of(NODE_KIND).create(newNode());
        const c = await store.of(VM_KIND).create(newVm());
        const d = await store.of(NODE_KIND).create(newNode());
        assert.ok(a.resourceVersion < b.resourceVersion, `${a.resourceVersion} < ${b.resourceVersion}`);
        assert.ok(b.resourceVersion < c.resourceVersion, `${b.resourceVersion} < ${c.resourceVersion}`);
        assert.ok(c.resourceVersion < d.resourceVersion, `${c.resourceVersion} < ${d.resourceVersion}`);
        assert.equal(await store.revision(), d.resourceVersion);
      });

      it("get of a missing id returns undefined", async () => {
        assert.equal(await store.of(VM_KIND).get(randomUUID()), undefined);
        assert.equal(await store.of(NODE_KIND).get(randomUUID()), undefined);
      });

      it("a VM name is unique within its project: ALREADY_EXISTS and nothing written", async () => {
        const first = newVm();
        await store.of(VM_KIND).create(first);
        const clash = newVm({ projectId: first.projectId, name: first.name });
        const rev = await store.revision();
        await rejectsWith(() => store.of(VM_KIND).create(clash), "already_exists");
        assert.equal(await store.revision(), rev);
        assert.equal(await store.of(VM_KIND).get(clash.id), undefined);
        const page = await store.of(VM_KIND).list({ where: { project_id: first.projectId }, order: { field: "name", desc: false }, limit: 10 });
        assert.deepEqual(page.items.map((v) => v.id), [first.id]);
        // The same name in another project is another VM.
        await store.of(VM_KIND).create(newVm({ name: first.name }));
      });

      it("a node hostname is unique: ALREADY_EXISTS and nothing written", async () => {
        const first = await store.of(NODE_KIND).create(newNode());
        const clash = newNode({ hostname: first.hostname });
        const rev = await store.revision();
        await rejectsWith(() => store.of(NODE_KIND).create(clash), "already_exists");
        assert.equal(await store.revision(), rev);
        assert.equal(await store.of(NODE_KIND).get(clash.id), undefined);
        const page = await store.of(NODE_KIND).list({ where: { hostname: first.hostname }, order: { field: "hostname", desc: false }, limit: 10 });
        assert.deepEqual(page.items.map((n) => n.id), [first.id]);
      });

      it("deleting a VM frees its name", async () => {
        const first = await store.of(VM_KIND).create(newVm());
        await store.of(VM_KIND).delete(first.id);
        const again = await store.of(VM_KIND).create(newVm({ projectId: first.projectId, name: first.name }));
        assert.equal((await store.of(VM_KIND).get(again.id))?.name, first.name);
      });
    });

    describe("update", () => {
      it("stores what mutate returns at a new revision and emits MODIFIED with the previous state", async () => {
        const vm = await store.of(VM_KIND).create(newVm({ labels: { v: "1" } }));
        const w = new Watcher(store.of(VM_KIND), await store.revision());
        assert.equal((await w.take(1))[0]?.type, "SYNCED");
        const updated = await store.of(VM_KIND).update(vm.id, (cur) => {
          cur.labels["v"] = "2";
          return cur;
        });
        assert.ok(updated.resourceVersion > vm.resourceVersion);
        assert.equal(updated.labels["v"], "2");
        assert.equal(await store.revision(), updated.resourceVersion);
        assert.deepEqual((await store.of(VM_KIND).get(vm.id))?.labels, { v: "2" });
        const e = await w.change();
        assert.equal(e.type, "MODIFIED");
        assert.equal(e.revision, updated.resourceVersion);
        assert.equal(e.object.labels["v"], "2");
        assert.equal(e.object.resourceVersion, updated.resourceVersion);
        assert.equal(e.previous?.labels["v"], "1");
        assert.equal(e.previous?.resourceVersion, vm.resourceVersion);
      });

      it("mutate returning undefined writes nothing: same object back, no revision, no event", async () => {
        const vm = await store.of(VM_KIND).create(newVm());
        const rev = await store.revision();
        const w = new Watcher(store.of(VM_KIND), rev);
        assert.deepEqual(summary(await w.take(1)), [`SYNCED@${rev}`]);
        const back = await store.of(VM_KIND).update(vm.id, () => undefined);
        assert.equal(back.resourceVersion, vm.resourceVersion);
        assert.equal(back.name, vm.name);
        assert.equal(await store.revision(), rev);
        // The next event must be this marker write, not a phantom update.
        const marker = await store.of(VM_KIND).create(newVm());
        assert.deepEqual(summary([await w.change()]), [`ADDED:${marker.id}@${marker.resourceVersion}`]);
      });

      it("a stale expectedVersion is ABORTED and changes nothing", async () => {
        const vm = await store.of(VM_KIND).create(newVm({ labels: { v: "1" } }));
        const v2 = await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, labels: { v: "2" } }));
        const rev = await store.revision();
        await rejectsWith(() => store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, labels: { v: "3" } }), { expectedVersion: vm.resourceVersion }), "aborted");
        assert.equal(await store.revision(), rev);
        const got = await store.of(VM_KIND).get(vm.id);
        assert.deepEqual(got?.labels, { v: "2" });
        assert.equal(got?.resourceVersion, v2.resourceVersion);
        const v4 = await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, labels: { v: "4" } }), { expectedVersion: v2.resourceVersion });
        assert.deepEqual(v4.labels, { v: "4" });
      });

      it("expectedVersion 0n is unconditional", async () => {
        const vm = await store.of(VM_KIND).create(newVm());
        await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: "one" }));
        const two = await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: "two" }), { expectedVersion: 0n });
        assert.equal(two.description, "two");
        assert.equal((await store.of(VM_KIND).get(vm.id))?.description, "two");
      });

      it("update of a missing id is NOT_FOUND", async () => {
        await rejectsWith(() => store.of(VM_KIND).update(randomUUID(), (cur) => cur), "not_found");
        await rejectsWith(() => store.of(NODE_KIND).update(randomUUID(), (cur) => cur), "not_found");
      });

      it("renaming to a taken name is ALREADY_EXISTS and changes nothing; a rename frees the old name", async () => {
        const a = await store.of(VM_KIND).create(newVm());
        const b = await store.of(VM_KIND).create(newVm({ projectId: a.projectId }));
        const rev = await store.revision();
        await rejectsWith(() => store.of(VM_KIND).update(b.id, (cur) => ({ ...cur, name: a.name })), "already_exists");
        assert.equal(await store.revision(), rev);
        assert.equal((await store.of(VM_KIND).get(b.id))?.name, b.name);
        const renamed = `r${uniq()}`;
        await store.of(VM_KIND).update(a.id, (cur) => ({ ...cur, name: renamed }));
        const moved = await store.of(VM_KIND).update(b.id, (cur) => ({ ...cur, name: a.name }));
        assert.equal(moved.name, a.name);
      });

      it("changing a node's hostname to a taken one is ALREADY_EXISTS", async () => {
        const a = await store.of(NODE_KIND).create(newNode());
        const b = await store.of(NODE_KIND).create(newNode());
        await rejectsWith(() => store.of(NODE_KIND).update(b.id, (cur) => ({ ...cur, hostname: a.hostname })), "already_exists");
        assert.equal((await store.of(NODE_KIND).get(b.id))?.hostname, b.hostname);
      });

      it("an error thrown by mutate propagates and changes nothing", async () => {
        const vm = await store.of(VM_KIND).create(newVm());
        const rev = await store.revision();
        await assert.rejects(
          store.of(VM_KIND).update(vm.id, (cur) => {
            cur.description = "half-done";
            throw new QuantixError("failed_precondition", "refused");
          }),
          (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition",
        );
        assert.equal(await store.revision(), rev);
        assert.equal((await store.of(VM_KIND).get(vm.id))?.description, "");
      });

      it("objects a caller wrote stay its own: not frozen, and changing them later changes nothing stored", async () => {
        const mine = newVm({ labels: { v: "1" } });
        const vm = await store.of(VM_KIND).create(mine);
        let held: VirtualMachine | undefined;
        await store.of(VM_KIND).update(vm.id, (cur) => {
          cur.labels["v"] = "2";
          return (held = cur);
        });
        const other = newVm({ labels: { v: "1" } });
        await store.commit([{ op: "create", kind: anyVm, object: other }]);
        for (const o of [mine, held!, other]) {
          assert.equal(Object.isFrozen(o) || Object.isFrozen(o.labels), false);
          o.labels["v"] = "changed";
        }
        assert.deepEqual((await store.of(VM_KIND).get(vm.id))?.labels, { v: "2" });
        assert.deepEqual((await store.of(VM_KIND).get(other.id))?.labels, { v: "1" });
      });

      it("a value not of its field's type fails the write, and nothing of its commit is stored", async () => {
        const rev = await store.revision();
        const bad = newVm();
        (bad as unknown as { name: unknown }).name = 5;
        await assert.rejects(store.of(VM_KIND).create(bad));
        const good = newVm();
        await assert.rejects(store.commit([{ op: "create", kind: anyVm, object: good }, { op: "create", kind: anyVm, object: bad }]));
        const vm = await store.of(VM_KIND).create(newVm());
        await assert.rejects(store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: 7 as unknown as string })));
        assert.equal(await store.revision(), rev + 1n);
        assert.equal(await store.of(VM_KIND).get(bad.id), undefined);
        assert.equal(await store.of(VM_KIND).get(good.id), undefined);
        assert.equal((await store.of(VM_KIND).get(vm.id))?.description, "");
      });

      it("a string that is not valid UTF-16 or an integer out of its field's range fails the write, and nothing is stored", async () => {
        const rev = await store.revision();
        const surrogate = newVm();
        surrogate.description = "half a pair: \uD800";
        await assert.rejects(store.of(VM_KIND).create(surrogate));
        const tooBig = newVm();
        tooBig.spec!.cpu!.cores = 2 ** 32;
        await assert.rejects(store.commit([{ op: "create", kind: anyVm, object: newVm() }, { op: "create", kind: anyVm, object: tooBig }]));
        const vm = await store.of(VM_KIND).create(newVm());
        await assert.rejects(
          store.of(VM_KIND).update(vm.id, (cur) => {
            cur.labels["k"] = "\uDC00 alone";
            return cur;
          }),
        );
        assert.equal(await store.revision(), rev + 1n);
        assert.equal(await store.of(VM_KIND).get(surrogate.id), undefined);
        assert.equal(await store.of(VM_KIND).get(tooBig.id), undefined);
        assert.deepEqual((await store.of(VM_KIND).get(vm.id))?.labels, {});
      });
    });

    describe("delete", () => {
      it("returns the last state at a new revision, emits DELETED with it, and get returns undefined", async () => {
        const vm = await store.of(VM_KIND).create(newVm({ labels: { gone: "soon" } }));
        const w = new Watcher(store.of(VM_KIND), await store.revision());
        assert.equal((await w.take(1))[0]?.type, "SYNCED");
        const last = await store.of(VM_KIND).delete(vm.id);
        assert.ok(last.resourceVersion > vm.resourceVersion);
        assert.equal(last.name, vm.name);
        assert.deepEqual(last.labels, { gone: "soon" });
        assert.equal(await store.revision(), last.resourceVersion);
        assert.equal(await store.of(VM_KIND).get(vm.id), undefined);
        const e = await w.change();
        assert.equal(e.type, "DELETED");
        assert.equal(e.revision, last.resourceVersion);
        assert.equal(e.object.id, vm.id);
        assert.deepEqual(e.object.labels, { gone: "soon" });
      });

      it("a check that throws deletes nothing; the check sees the current state", async () => {
        const vm = await store.of(VM_KIND).create(newVm({ state: VmStatus_State.RUNNING }));
        const rev = await store.revision();
        let seen: VmStatus_State | undefined;
        await rejectsWith(
          () =>
            store.of(VM_KIND).delete(vm.id, (cur) => {
              seen = cur.status?.state;
              throw new QuantixError("failed_precondition", "it is RUNNING");
            }),
          "failed_precondition",
        );
        assert.equal(seen, VmStatus_State.RUNNING);
        assert.equal(await store.revision(), rev);
        assert.equal((await store.of(VM_KIND).get(vm.id))?.resourceVersion, vm.resourceVersion);
      });

      it("a stale expectedVersion is ABORTED; a missing id is NOT_FOUND", async () => {
        const vm = await store.of(VM_KIND).create(newVm());
        await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: "newer" }));
        await rejectsWith(() => store.of(VM_KIND).delete(vm.id, undefined, { expectedVersion: vm.resourceVersion }), "aborted");
        assert.ok(await store.of(VM_KIND).get(vm.id));
        await rejectsWith(() => store.of(VM_KIND).delete(randomUUID()), "not_found");
        await rejectsWith(() => store.of(NODE_KIND).delete(randomUUID()), "not_found");
      });
    });

    describe("list", () => {
      const byName: Order<"name"> = { field: "name", desc: false };
      const ids = (page: ListPage<{ id: string }>) => page.items.map((x) => x.id).sort();
      const sorted = (...xs: { id: string }[]) => xs.map((x) => x.id).sort();

      it("filters VMs by project, labels (all must match), states and node; totalCount counts all matches", async () => {
        const p = randomUUID();
        const n1 = randomUUID();
        const a = await store.of(VM_KIND).create(newVm({ projectId: p, labels: { env: "prod", tier: "web" }, state: VmStatus_State.RUNNING, nodeId: n1 }));
        const b = await store.of(VM_KIND).create(newVm({ projectId: p, labels: { env: "prod" }, state: VmStatus_State.STOPPED, nodeId: n1 }));
        const c = await store.of(VM_KIND).create(newVm({ projectId: p, labels: { env: "dev", tier: "web" }, state: VmStatus_State.PAUSED }));
        await store.of(VM_KIND).create(newVm({ labels: { env: "prod", tier: "web" }, state: VmStatus_State.RUNNING, nodeId: n1 }));
        const q = (extra: { where?: Record<string, FilterValue>; labels?: Record<string, string>; limit?: number }) => store.of(VM_KIND).list({ order: byName, limit: 100, ...extra, where: { project_id: p, ...extra.where } });
        const all = await q({});
        assert.deepEqual(ids(all), sorted(a, b, c));
        assert.equal(all.totalCount, 3);
        assert.deepEqual(ids(await q({ labels: { env: "prod" } })), sorted(a, b));
        assert.deepEqual(ids(await q({ labels: { env: "prod", tier: "web" } })), sorted(a));
        assert.deepEqual(ids(await q({ labels: { env: "prod", tier: "db" } })), []);
        assert.deepEqual(ids(await q({ where: { state: [VmStatus_State.RUNNING, VmStatus_State.PAUSED] } })), sorted(a, c));
        assert.deepEqual(ids(await q({ where: { node_id: n1 } })), sorted(a, b));
        const few = await q({ where: { node_id: n1 }, limit: 1 });
        assert.equal(few.items.length, 1);
        assert.equal(few.totalCount, 2);
        assert.equal(few.hasMore, true);
      });

      it("filters nodes by labels, phases, schedulability and hostname", async () => {
        const tag = uniq();
        const a = await store.of(NODE_KIND).create(newNode({ labels: { t: tag, zone: "a", gpu: "yes" }, phase: NodeStatus_Phase.READY }));
        const b = await store.of(NODE_KIND).create(newNode({ labels: { t: tag, zone: "a" }, phase: NodeStatus_Phase.MAINTENANCE, schedulable: false }));
        const c = await store.of(NODE_KIND).create(newNode({ labels: { t: tag, zone: "b" }, phase: NodeStatus_Phase.NOT_READY }));
        const q = (extra: { where?: Record<string, FilterValue>; labels?: Record<string, string> }) => store.of(NODE_KIND).list({ labels: { t: tag }, order: { field: "hostname", desc: false }, limit: 100, ...extra });
        const all = await q({});
        assert.deepEqual(ids(all), sorted(a, b, c));
        assert.equal(all.totalCount, 3);
        assert.deepEqual(ids(await q({ labels: { t: tag, zone: "a" } })), sorted(a, b));
        assert.deepEqual(ids(await q({ labels: { t: tag, zone: "a", gpu: "yes" } })), sorted(a));
        assert.deepEqual(ids(await q({ where: { phase: [NodeStatus_Phase.READY, NodeStatus_Phase.NOT_READY] } })), sorted(a, c));
        assert.deepEqual(ids(await q({ where: { schedulable: true } })), sorted(a, c));
        assert.deepEqual(ids(await q({ where: { hostname: b.hostname } })), sorted(b));
      });

      it("limit 0 returns only the count; the page's revision is the store's at read time", async () => {
        const p = randomUUID();
        for (let i = 0; i < 3; i++) await store.of(VM_KIND).create(newVm({ projectId: p }));
        const page = await store.of(VM_KIND).list({ where: { project_id: p }, order: byName, limit: 0 });
        assert.deepEqual(page.items, []);
        assert.equal(page.totalCount, 3);
        assert.equal(page.revision, await store.revision());
        const node = await store.of(NODE_KIND).create(newNode());
        const later = await store.of(VM_KIND).list({ where: { project_id: p }, order: byName, limit: 10 });
        assert.equal(later.revision, node.resourceVersion);
        assert.equal(later.revision, await store.revision());
      });

      describe("keyset pagination", () => {
        // Names repeat across two projects and creation times repeat, so ties must be broken by id.
        const names = ["alpha", "alpha", "bravo", "bravo", "charlie", "delta", "echo"];
        let tag: string;
        let vms: VirtualMachine[];

        before(async () => {
          tag = uniq();
          const projects = [randomUUID(), randomUUID()];
          vms = [];
          for (const [i, n] of names.entries()) {
            const init = { projectId: projects[i % 2]!, name: n, labels: { page: tag }, createdMs: BASE_MS + (i % 3) * 1000 };
            vms.push(await store.of(VM_KIND).create(newVm(init)));
          }
        });

        for (const field of ["name", "created_at"] as const) {
          for (const desc of [false, true]) {
            it(`walks every page in ${field} ${desc ? "desc" : "asc"} order, seeing each VM once`, async () => {
              const pos = (v: VirtualMachine): Cursor => ({ key: sortKeyOf(VM_KIND, v, field), id: v.id });
              const cmp = (a: Cursor, b: Cursor) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
              const expected = [...vms].sort((a, b) => (desc ? -1 : 1) * cmp(pos(a), pos(b))).map((v) => v.id);
              for (const limit of [1, 2, 3, names.length, names.length + 1]) {
                const seen: string[] = [];
                let after: Cursor | undefined;
                for (let pages = 0; ; pages++) {
                  assert.ok(pages <= names.length, "pagination does not terminate");
                  const page = await store.of(VM_KIND).list({ labels: { page: tag }, order: { field, desc }, after, limit });
                  assert.equal(page.totalCount, names.length);
                  assert.ok(page.items.length <= limit);
                  seen.push(...page.items.map((v) => v.id));
                  assert.equal(page.hasMore, seen.length < names.length, `hasMore after ${seen.length} of ${names.length}`);
                  const last = page.items.at(-1);
                  if (!page.hasMore || !last) break;
                  after = pos(last);
                }
                assert.deepEqual(seen, expected, `limit ${limit}`);
              }
            });
          }
        }

        it("pages nodes by hostname and created_at in both directions", async () => {
          const ntag = uniq();
          const nodes: Node[] = [];
          for (let i = 0; i < 5; i++) {
            nodes.push(await store.of(NODE_KIND).create(newNode({ hostname: `h${ntag}n${i}`, labels: { page: ntag }, createdMs: BASE_MS + (i % 2) * 1000 })));
          }
          for (const field of ["hostname", "created_at"] as const) {
            for (const desc of [false, true]) {
              const pos = (n: Node): Cursor => ({ key: sortKeyOf(NODE_KIND, n, field), id: n.id });
              const cmp = (a: Cursor, b: Cursor) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
              const expected = [...nodes].sort((a, b) => (desc ? -1 : 1) * cmp(pos(a), pos(b))).map((n) => n.id);
              const seen: string[] = [];
              let after: Cursor | undefined;
              for (let pages = 0; ; pages++) {
                assert.ok(pages <= nodes.length, "pagination does not terminate");
                const page = await store.of(NODE_KIND).list({ labels: { page: ntag }, order: { field, desc }, after, limit: 2 });
                seen.push(...page.items.map((n) => n.id));
                assert.equal(page.hasMore, seen.length < nodes.length);
                const last = page.items.at(-1);
                if (!page.hasMore || !last) break;
                after = pos(last);
              }
              assert.deepEqual(seen, expected, `${field} ${desc ? "desc" : "asc"}`);
            }
          }
        });
      });
    });

    describe("concurrent writes (group commit)", () => {
      /** Settles every promise; the outcome of each, in order. */
      const settle = <T>(ps: Promise<T>[]) => Promise.allSettled(ps);

      it("creates, updates and deletes issued at once: each caller gets its own outcome; revisions are gap-free; a watcher sees each change once, in order", async () => {
        const projectId = randomUUID();
        const existing = await Promise.all(Array.from({ length: 10 }, () => store.of(VM_KIND).create(newVm({ projectId }))));
        const from = await store.revision();
        const w = new Watcher(store.of(VM_KIND), from);
        assert.deepEqual(summary(await w.take(1)), [`SYNCED@${from}`]);
        const fresh = Array.from({ length: 40 }, () => newVm({ projectId }));
        const twins = [newVm({ projectId, name: "twin" }), newVm({ projectId, name: "twin" })];
        const clash = newVm({ projectId, name: existing[0]!.name });
        const results = await settle<VirtualMachine>([
          ...fresh.map((v) => store.of(VM_KIND).create(v)),
          ...existing.slice(0, 6).map((v, i) => store.of(VM_KIND).update(v.id, (cur) => ({ ...cur, description: `d${i}` }))),
          store.of(VM_KIND).update(existing[6]!.id, (cur) => ({ ...cur, name: existing[7]!.name })), // a taken name
          store.of(VM_KIND).delete(existing[8]!.id),
          ...twins.map((v) => store.of(VM_KIND).create(v)),
          store.of(VM_KIND).create(clash),
          store.of(VM_KIND).create(newVm({ projectId })),
        ]);
        const failed = results.flatMap((r, i) => (r.status === "rejected" ? [[i, (r.reason as QuantixError).code] as const] : []));
        // The rename to a taken name, one of the twins and the clash fail, each with its own error; nothing else does.
        assert.equal(failed.length, 3, JSON.stringify(failed));
        assert.ok(failed.every(([, code]) => code === "already_exists"), JSON.stringify(failed));
        assert.ok(failed.some(([i]) => i === 46), "the rename to a taken name must fail");
        assert.ok(failed.some(([i]) => i === 50), "the create of a taken name must fail");
        assert.equal(failed.filter(([i]) => i === 48 || i === 49).length, 1, "exactly one of two creates of one name must fail");
        const ok = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
        const revs = ok.map((v) => v.resourceVersion).sort((a, b) => (a < b ? -1 : 1));
        // Gap-free: the acknowledged writes are exactly the revisions after `from`.
        assert.deepEqual(revs, Array.from({ length: ok.length }, (_, i) => from + BigInt(i + 1)));
        assert.equal(await store.revision(), from + BigInt(ok.length));
        for (const v of fresh) assert.equal((await store.of(VM_KIND).get(v.id))?.name, v.name);
        assert.equal((await store.of(VM_KIND).get(existing[6]!.id))?.name, existing[6]!.name);
        assert.equal(await store.of(VM_KIND).get(existing[8]!.id), undefined);
        assert.equal(await store.of(VM_KIND).get(clash.id), undefined);
        const events = (await w.take(ok.length)) as ChangeEvent<VirtualMachine>[];
        assert.deepEqual(events.map((e) => e.revision), revs, "watch events out of order, missing or duplicated");
        const byRev = new Map(ok.map((v) => [v.resourceVersion, v]));
        for (const e of events) {
          assert.equal(e.object.id, byRev.get(e.revision)!.id);
          if (e.type === "MODIFIED") assert.equal(e.object.description, byRev.get(e.revision)!.description);
        }
      });

      it("concurrent updates of many objects without a version all land, each once", async () => {
        const vms = await Promise.all(Array.from({ length: 30 }, () => store.of(VM_KIND).create(newVm())));
        const from = await store.revision();
        const updated = await Promise.all(vms.flatMap((v) => [1, 2, 3].map((n) => store.of(VM_KIND).update(v.id, (cur) => ({ ...cur, labels: { ...cur.labels, [`k${n}`]: "v" } })))));
        assert.equal(new Set(updated.map((u) => u.resourceVersion)).size, 90);
        assert.equal(await store.revision(), from + 90n);
        for (const v of vms) assert.deepEqual({ ...(await store.of(VM_KIND).get(v.id))!.labels }, { k1: "v", k2: "v", k3: "v" });
      });
    });

    describe("watch", () => {
      it("replays exactly the changes after fromRevision in order, then SYNCED, then live changes", async () => {
        const from = await store.revision();
        const a = await store.of(VM_KIND).create(newVm());
        await store.of(NODE_KIND).create(newNode()); // another kind: not in a VM watch, but counted in revisions
        const a2 = await store.of(VM_KIND).update(a.id, (cur) => ({ ...cur, description: "two" }));
        const b = await store.of(VM_KIND).create(newVm());
        const gone = await store.of(VM_KIND).delete(a.id);
        const at = await store.revision();
        const w = new Watcher(store.of(VM_KIND), from);
        const replay = await w.take(5);
        assert.deepEqual(summary(replay), [
          `ADDED:${a.id}@${a.resourceVersion}`,
          `MODIFIED:${a.id}@${a2.resourceVersion}`,
          `ADDED:${b.id}@${b.resourceVersion}`,
          `DELETED:${a.id}@${gone.resourceVersion}`,
          `SYNCED@${at}`,
        ]);
        const modified = replay[1] as ChangeEvent<VirtualMachine>;
        assert.equal(modified.object.description, "two");
        assert.equal(modified.previous?.description, "");
        const b2 = await store.of(VM_KIND).update(b.id, (cur) => ({ ...cur, description: "live" }));
        const live = await w.change();
        assert.deepEqual(summary([live]), [`MODIFIED:${b.id}@${b2.resourceVersion}`]);
        assert.equal(live.object.description, "live");
      });

      it("a watch from the current revision yields SYNCED first, then live changes", async () => {
        const now = await store.revision();
        const w = new Watcher(store.of(NODE_KIND), now);
        assert.deepEqual(summary(await w.take(1)), [`SYNCED@${now}`]);
        const n = await store.of(NODE_KIND).create(newNode());
        assert.deepEqual(summary([await w.change()]), [`ADDED:${n.id}@${n.resourceVersion}`]);
      });

      it("two watchers see the same sequence", async () => {
        const from = await store.revision();
        const v = await store.of(VM_KIND).create(newVm());
        const w1 = new Watcher(store.of(VM_KIND), from);
        const w2 = new Watcher(store.of(VM_KIND), from);
        const head1 = await w1.take(2);
        const head2 = await w2.take(2);
        await store.of(VM_KIND).update(v.id, (cur) => ({ ...cur, description: "x" }));
        await store.of(VM_KIND).create(newVm());
        await store.of(VM_KIND).delete(v.id);
        const s1 = summary([...head1, ...(await w1.take(3))]);
        const s2 = summary([...head2, ...(await w2.take(3))]);
        assert.equal(s1.length, 5);
        assert.deepEqual(s1, s2);
      });

      it("aborting the signal ends the iteration", async () => {
        const w = new Watcher(store.of(VM_KIND), await store.revision());
        assert.equal((await w.take(1))[0]?.type, "SYNCED");
        const pending = w.next();
        w.abort();
        assert.equal((await pending).done, true);
        const controller = new AbortController();
        let count = 0;
        for await (const e of store.of(VM_KIND).watch(await store.revision(), controller.signal)) {
          count += 1;
          if (e.type === "SYNCED") controller.abort();
        }
        assert.equal(count, 1);
      });

      it("a watch from a revision newer than the store is OUT_OF_RANGE", async () => {
        const future = (await store.revision()) + 1000n;
        await rejectsWith(async () => new Watcher(store.of(VM_KIND), future).next(), "out_of_range");
        await rejectsWith(async () => new Watcher(store.of(NODE_KIND), future).next(), "out_of_range");
      });

      it("mutating a watched object changes nothing stored and nothing another watcher sees", async () => {
        const from = await store.revision();
        const vm = await store.of(VM_KIND).create(newVm({ labels: { keep: "me" } }));
        const w1 = new Watcher(store.of(VM_KIND), from);
        const w2 = new Watcher(store.of(VM_KIND), from);
        const e1 = await w1.change();
        tryMutate(() => (e1.object.labels["keep"] = "changed"));
        tryMutate(() => (e1.object.spec!.cpu!.cores = 99));
        const e2 = await w2.change();
        assert.deepEqual(e2.object.labels, { keep: "me" });
        assert.equal(e2.object.spec?.cpu?.cores, 2);
        const got = await store.of(VM_KIND).get(vm.id);
        assert.deepEqual(got?.labels, { keep: "me" });
        assert.equal(got?.spec?.cpu?.cores, 2);
      });

      it("changesOf tells of each change of one object by the time its writer is answered, and of no other object's; watchers still get them all", async () => {
        const from = await store.revision();
        const vm = await store.of(VM_KIND).create(newVm());
        const other = await store.of(VM_KIND).create(newVm());
        const told: string[] = [];
        const unfollow = store.of(VM_KIND).changesOf(vm.id, (ev) => told.push(ev ? `${ev.type}:${ev.object.id}@${ev.revision}:${ev.type === "DELETED" ? "" : ev.object.description}` : "reread"));
        const one = await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: "one" }));
        assert.deepEqual(told, [`MODIFIED:${vm.id}@${one.resourceVersion}:one`], "told of the committed object when its write returns");
        await store.of(VM_KIND).update(other.id, (cur) => ({ ...cur, description: "other" }));
        const gone = await store.of(VM_KIND).delete(vm.id);
        unfollow();
        assert.deepEqual(told, [`MODIFIED:${vm.id}@${one.resourceVersion}:one`, `DELETED:${vm.id}@${gone.resourceVersion}:`], "its own object's changes only");
        const w = new Watcher(store.of(VM_KIND), from);
        assert.deepEqual(
          summary(await w.take(5)).map((x) => x.split("@")[0]),
          [`ADDED:${vm.id}`, `ADDED:${other.id}`, `MODIFIED:${vm.id}`, `MODIFIED:${other.id}`, `DELETED:${vm.id}`],
        );
      });

      const historySize = opts.historySize;
      it("a watch from before the kept history is OUT_OF_RANGE; a recent one still works", { skip: historySize === undefined && "this store keeps no bounded history (no historySize given)" }, async () => {
        const size = historySize ?? 0;
        const vm = await store.of(VM_KIND).create(newVm());
        for (let i = 0; i < size + 10; i++) await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: `d${i}` }));
        await rejectsWith(async () => new Watcher(store.of(VM_KIND), 1n).next(), "out_of_range");
        const recent = await store.revision();
        const last = await store.of(VM_KIND).update(vm.id, (cur) => ({ ...cur, description: "last" }));
        const w = new Watcher(store.of(VM_KIND), recent);
        assert.deepEqual(summary(await w.take(2)), [`MODIFIED:${vm.id}@${last.resourceVersion}`, `SYNCED@${last.resourceVersion}`]);
      });
    });
  });
}
