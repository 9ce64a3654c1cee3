import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService, type VmUpdate } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { collect, spawnControlPlane, startPostgres, synced, until, within, type ControlPlaneProcess, type TestPostgres } from "@quantix/testing";

// Crash safety and replicas, on the real binary: what a client saw acknowledged survives a
// SIGKILL, and a watcher on one replica sees every write made through another.

type Vms = Client<typeof VMService>;
// The default project: it exists from the first start (CreateVM needs an existing
// project), and these control planes have no demo data, so it holds this test's VMs alone.
const PROJECT = "00000000-0000-0000-0000-000000000001";
const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
const client = (url: string): Vms => createClient(VMService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));

/** What the client saw acknowledged: each VM's last acknowledged version and description. */
type Acked = Map<string, { rv: bigint; description: string }>;

/** How a stream of writes is made: `workers` concurrent callers, each a create then `updates` updates of it. */
interface Load {
  readonly workers: number;
  readonly updates: number;
}

/**
 * Writes from concurrent workers (a create, then updates of it) until `stop` is set,
 * recording each acknowledgement. Errors after the server dies end the worker.
 */
async function writeStream(vms: () => Vms, acked: Acked, stop: { now: boolean }, load: Load): Promise<void> {
  const worker = async (w: number) => {
    for (let i = 0; !stop.now; i++) {
      try {
        const vm = await vms().createVM({ name: `crash-${w}-${i}-${Date.now()}`, projectId: PROJECT, spec: SPEC });
        acked.set(vm.id, { rv: vm.resourceVersion, description: "" });
        for (let u = 0; u < load.updates && !stop.now; u++) {
          const up = await vms().updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: `update ${u}` });
          acked.set(vm.id, { rv: up.resourceVersion, description: up.description });
        }
      } catch {
        if (stop.now) return;
        throw new Error(`worker ${w}: a write failed before the crash`);
      }
    }
  };
  await Promise.all(Array.from({ length: load.workers }, (_, w) => worker(w)));
}

/** Every VM of the test's project, read page by page. */
async function listAll(vms: Vms): Promise<Map<string, { rv: bigint; description: string }>> {
  const out = new Map<string, { rv: bigint; description: string }>();
  let pageToken = "";
  do {
    const page = await vms.listVMs({ projectId: PROJECT, pageSize: 200, pageToken });
    for (const vm of page.vms) out.set(vm.id, { rv: vm.resourceVersion, description: vm.description });
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/**
 * SIGKILLs a control plane in the middle of a stream of writes (with two replicas, the
 * client alternates between them and one is killed); restarts it; checks that every write
 * the client saw acknowledged is there, whole, through every replica.
 */
async function crashAndCheck(env: Record<string, string>, replicas = 1, load: Load = { workers: 4, updates: 2 }): Promise<void> {
  const procs: ControlPlaneProcess[] = Array.from({ length: replicas }, () => spawnControlPlane(env));
  try {
    const urls = await Promise.all(procs.map((p) => within(p.url, 60_000, "the control plane to listen")));
    const acked: Acked = new Map();
    const stop = { now: false };
    let turn = 0;
    const writing = writeStream(() => client(urls[turn++ % urls.length]!), acked, stop, load);
    const enough = Math.max(40, load.workers * 4);
    await until(() => (acked.size >= enough ? true : undefined), `${enough} acknowledged VMs`, 60_000);
    const before = new Map(acked);
    const firstRv = [...before.values()].reduce((a, b) => (b.rv < a ? b.rv : a), before.values().next().value!.rv);
    stop.now = true;
    await procs[0]!.kill("SIGKILL");
    await writing;

    procs[0] = spawnControlPlane(env);
    urls[0] = await within(procs[0].url, 60_000, "the control plane to listen again");
    for (const url of urls) {
      const vms = client(url);
      const stored = await listAll(vms);
      for (const [id, a] of acked) {
        const s = stored.get(id);
        assert.ok(s, `acknowledged VM ${id} is missing after the crash (read through ${url})`);
        assert.ok(s.rv >= a.rv, `VM ${id}: resource_version ${s.rv} is older than the acknowledged ${a.rv}`);
        if (s.rv === a.rv) assert.equal(s.description, a.description, `VM ${id}: acknowledged description lost`);
      }
      // Nothing half-written: at most the in-flight creates (one per worker) are extra, and
      // every stored VM reads back whole (the API decodes it) with the same state through a watch.
      assert.ok(stored.size - acked.size <= load.workers, `${stored.size - acked.size} VMs appeared that were never acknowledged`);
      const abort = new AbortController();
      const snapshot = await collect(vms.watchVMs({ projectId: PROJECT }, { signal: abort.signal }), synced, 20_000);
      abort.abort();
      const added = snapshot.filter((u) => u.type === EventType.ADDED);
      assert.equal(added.length, stored.size);
      for (const u of added) assert.ok((u.vm?.resourceVersion ?? 0n) >= stored.get(u.vm!.id)!.rv);
      // Resuming from a revision before the crash replays the history written before it, in order.
      const abort2 = new AbortController();
      const replay = await collect(vms.watchVMs({ projectId: PROJECT, resourceVersion: firstRv }, { signal: abort2.signal }), synced, 20_000);
      abort2.abort();
      const revs = replay.filter((u) => u.type !== EventType.SYNCED).map((u) => u.resourceVersion);
      assert.ok(revs.length > 0, "no history replayed after the restart");
      assert.deepEqual(revs, [...revs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), "replay out of order");
      assert.equal(new Set(revs).size, revs.length, "replay has duplicates");
    }
  } finally {
    await Promise.all(procs.map((p) => p.kill("SIGKILL")));
  }
}

describe("crash safety", () => {
  let pgServer: TestPostgres;
  const dirs: string[] = [];
  before(async () => {
    pgServer = await startPostgres();
  });
  after(async () => {
    await pgServer?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("embedded: every acknowledged write survives a SIGKILL", { timeout: 180_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "quantix-crash-"));
    dirs.push(dir);
    await crashAndCheck({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "embedded", QUANTIX_DATA_DIR: join(dir, "data"), QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" });
  });

  it("PostgreSQL: every acknowledged write survives a SIGKILL", { timeout: 180_000 }, async () => {
    const url = await pgServer.createDatabase("crash");
    await crashAndCheck({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: url, QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" });
  });

  // Many creates in flight at once share transactions and commits (group commit): each is
  // acknowledged only after its batch's COMMIT, so a kill between the two loses none.
  it("embedded, 48 concurrent creators (group commit): every acknowledged create survives a SIGKILL", { timeout: 180_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "quantix-crash-"));
    dirs.push(dir);
    await crashAndCheck({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "embedded", QUANTIX_DATA_DIR: join(dir, "data"), QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" }, 1, { workers: 48, updates: 0 });
  });

  it("PostgreSQL, 48 concurrent creators (group commit): every acknowledged create survives a SIGKILL", { timeout: 180_000 }, async () => {
    const url = await pgServer.createDatabase("crash_group");
    await crashAndCheck({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: url, QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" }, 1, { workers: 48, updates: 0 });
  });

  it("PostgreSQL, two replicas behind a client that alternates: every acknowledged write survives a SIGKILL of one", { timeout: 180_000 }, async () => {
    const url = await pgServer.createDatabase("crash_replicas");
    await crashAndCheck({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: url, QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" }, 2);
  });

  it("two replicas: writes alternate between them; each one's watcher sees every write, in order", { timeout: 180_000 }, async () => {
    const url = await pgServer.createDatabase("replicas");
    const env = { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: url, QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" };
    const a = spawnControlPlane(env);
    const b = spawnControlPlane(env);
    try {
      const [urlA, urlB] = await Promise.all([within(a.url, 60_000, "replica A"), within(b.url, 60_000, "replica B")]);
      const replicas = [client(urlA), client(urlB)];
      const watches = replicas.map((vms) => {
        const abort = new AbortController();
        const events: VmUpdate[] = [];
        const done = (async () => {
          for await (const u of vms.watchVMs({ projectId: PROJECT }, { signal: abort.signal })) events.push(u);
        })().catch(() => undefined);
        return { abort, events, done };
      });
      await until(() => (watches.every((w) => synced(w.events)) ? true : undefined), "both watches to sync", 20_000);
      const written: bigint[] = [];
      let id = "";
      for (let i = 0; i < 60; i++) {
        const vms = replicas[i % 2]!;
        if (i % 3 === 0) {
          const created = await vms.createVM({ name: `replica-${i}`, projectId: PROJECT, spec: SPEC });
          id = created.id;
          written.push(created.resourceVersion);
        }
        const up = await vms.updateVM({ id, updateMask: { paths: ["description"] }, description: `write ${i}` });
        written.push(up.resourceVersion);
      }
      const last = written[written.length - 1]!;
      const seen: bigint[][] = [];
      for (const [name, w] of [["A", watches[0]!], ["B", watches[1]!]] as const) {
        await until(() => (w.events.some((u) => u.type !== EventType.SYNCED && u.resourceVersion >= last) ? true : undefined), `replica ${name}'s watcher to reach revision ${last}`, 20_000);
        const revs = w.events.filter((u) => u.type !== EventType.SYNCED).map((u) => u.resourceVersion);
        // Every write, through either replica, in revision order, each once (the leader's
        // controllers may add their own changes in between: those are in the sequence too).
        assert.deepEqual(revs.filter((r) => written.includes(r)), written, `replica ${name}: a write is missing, duplicated or out of order`);
        assert.equal(new Set(revs).size, revs.length, `replica ${name}: duplicate revisions`);
        assert.deepEqual(revs, [...revs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), `replica ${name}: out of order`);
        seen.push(revs.filter((r) => r <= last));
      }
      assert.deepEqual(seen[0], seen[1], "the two replicas' watchers saw different sequences");
      for (const w of watches) w.abort.abort();
      // One leader runs the controllers; the other only serves.
      const leaders = [a, b].filter((p) => /leading: running the controllers/.test(p.stdout()));
      assert.equal(leaders.length, 1, "exactly one replica must lead");
    } finally {
      await Promise.all([a.kill(), b.kill()]);
    }
  });
});
