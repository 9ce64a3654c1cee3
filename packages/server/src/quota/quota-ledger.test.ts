import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { CreateVMRequestSchema, UpdateVMRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { allOf, newQuota, PROJECT_KIND, QUOTA_KIND, QuotaExceededError, randomIds, SCHEDULER, systemClock, usageSum, usedOf, VM_KIND, vmUsage, type Limits, type Store } from "@quantix/core";
import { ProjectSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { QuotaLimitsSchema } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { silentLogger } from "@quantix/rpc";
import { startPostgres, type TestPostgres } from "@quantix/testing";
import { finalizeVm } from "../controllers/vm-finalize.js";
import type { VmStatusWriter } from "../controllers/vm-status-writer.js";
import { NodeDrivers } from "../hypervisor/node-drivers.js";
import { VmService } from "../services/vm-service.js";
import { MemoryStore } from "../store/memory-store.js";
import { migrate } from "../store/sql/migrations.js";
import { PgDriver } from "../store/sql/pg-driver.js";
import { PgliteDriver } from "../store/sql/pglite-driver.js";
import { SqlStore } from "../store/sql/sql-store.js";
import { QuotaLedger } from "./quota-ledger.js";

const NO_WAIT = { ms: 0, signal: new AbortController().signal };
const SQL_OPTIONS = { historyRevisions: 1000, maxBacklog: 10_000, pollMs: 500, onError: (e: unknown) => console.error(e) };

function service(store: Store, defaults: Limits = {}) {
  return new VmService({ store, clock: systemClock, ids: randomIds, ledger: new QuotaLedger({ store, clock: systemClock, defaults }) });
}

function vmRequest(projectId: string, cores = 1, memoryMib = 256) {
  return create(CreateVMRequestSchema, { name: `vm-${randomUUID().slice(0, 8)}`, projectId, spec: { cpu: { cores }, memory: { sizeMib: BigInt(memoryMib) } } });
}

/** A new project (VMs name one that exists): its id. */
async function aProject(store: Store, prefix: string): Promise<string> {
  const id = `${prefix}-${randomUUID().slice(0, 8)}`;
  await store.of(PROJECT_KIND).create(create(ProjectSchema, { id, name: id }));
  return id;
}

async function setLimits(store: Store, projectId: string, limits: MessageInitShape<typeof QuotaLimitsSchema>) {
  await store.of(QUOTA_KIND).create({ ...newQuota(projectId, Date.now()), limits: create(QuotaLimitsSchema, limits) });
}

/** Asserts that the project's quota use is the sum of what its existing VMs use. */
async function assertNoDrift(store: Store, projectId: string) {
  const vms = [];
  for await (const vm of allOf(store.of(VM_KIND), { where: { project_id: projectId } })) vms.push(vmUsage(vm));
  const used = usedOf(await store.of(QUOTA_KIND).get(projectId));
  const sum = usageSum(vms);
  assert.deepEqual({ vms: used.vms, vcpus: used.vcpus, memory_mib: used.memory_mib }, { vms: sum.vms, vcpus: sum.vcpus, memory_mib: sum.memory_mib });
  return used;
}

/** The quota scenarios, on one store. */
function quotaSuite(name: string, open: () => Promise<{ store: Store; reopen?: () => Promise<Store>; close(): Promise<void> }>) {
  describe(`quotas: ${name}`, () => {
    let s: Awaited<ReturnType<typeof open>>;
    before(async () => {
      s = await open();
    });
    after(async () => s.close());

    it("200 concurrent creates against vms=50: exactly 50 succeed, 150 RESOURCE_EXHAUSTED, used 50", async () => {
      const project = await aProject(s.store, "race");
      await setLimits(s.store, project, { vms: 50n });
      const vms = service(s.store);
      const results = await Promise.allSettled(Array.from({ length: 200 }, () => vms.create(vmRequest(project))));
      const ok = results.filter((r) => r.status === "fulfilled").length;
      const refused = results.filter((r) => r.status === "rejected" && r.reason instanceof QuotaExceededError && r.reason.code === "resource_exhausted");
      const other = results.filter((r) => r.status === "rejected" && !(r.reason instanceof QuotaExceededError));
      assert.deepEqual(other.map((r) => String((r as PromiseRejectedResult).reason)), []);
      assert.deepEqual([ok, refused.length], [50, 150]);
      const used = await assertNoDrift(s.store, project);
      assert.equal(used.vms, 50);
      const first = (refused[0] as PromiseRejectedResult).reason as QuotaExceededError;
      assert.equal(first.message, `quota vms of project ${project} exceeded: limit 50, used 50, requested 1`);
      assert.deepEqual(first.quotaViolations.map((v) => [v.subject, v.resource, v.limit, v.used, v.requested]), [[`project:${project}`, "vms", 50, 50, 1]]);
    });

    it("creates, resizes and deletes (at once and through the finalizer) keep use equal to the sum over existing VMs", async () => {
      const project = await aProject(s.store, "drift");
      const vms = service(s.store);
      const made = [];
      for (let i = 0; i < 30; i++) made.push(await vms.create(vmRequest(project, 1 + (i % 4), 256 * (1 + (i % 3)))));
      await assertNoDrift(s.store, project);
      // Resizes, some concurrent with each other on different VMs.
      await Promise.all(made.slice(0, 12).map((vm, i) => vms.update(create(UpdateVMRequestSchema, { id: vm.id, spec: { cpu: { cores: 5 + i }, memory: { sizeMib: 1024n } }, updateMask: { paths: ["spec.cpu", "spec.memory"] } }))));
      await assertNoDrift(s.store, project);
      // Deleted at once (on no node).
      await Promise.all(made.slice(12, 20).map((vm) => vms.delete({ id: vm.id, force: false } as never, NO_WAIT)));
      await assertNoDrift(s.store, project);
      // On a node: the delete marks them (still counted), the finalizer's removal releases them.
      const placed = made.slice(20, 26);
      for (const vm of placed) {
        await s.store.of(VM_KIND).update(vm.id, (cur) => ((cur.status!.nodeId = `gone-${randomUUID().slice(0, 8)}`), cur), { actor: SCHEDULER });
        await vms.delete({ id: vm.id, force: false } as never, NO_WAIT);
      }
      const marked = await assertNoDrift(s.store, project);
      assert.equal(marked.vms, 30 - 8);
      const deps = { store: s.store, drivers: new NodeDrivers(), clock: systemClock, log: silentLogger, status: {} as VmStatusWriter };
      await Promise.all(placed.map(async (vm) => finalizeVm((await s.store.of(VM_KIND).get(vm.id))!, deps)));
      for (const vm of placed) assert.equal(await s.store.of(VM_KIND).get(vm.id), undefined);
      const final = await assertNoDrift(s.store, project);
      assert.equal(final.vms, 30 - 8 - 6);
      if (s.reopen) {
        s.store = await s.reopen();
        assert.deepEqual(await assertNoDrift(s.store, project), final, "use survives a restart");
      }
    });

    it("a resize past a limit is refused with the quota named and changes nothing; a lowered limit keeps what exists", async () => {
      const project = await aProject(s.store, "resize");
      await setLimits(s.store, project, { vcpus: 20n });
      const vms = service(s.store);
      const a = await vms.create(vmRequest(project, 8));
      const b = await vms.create(vmRequest(project, 10));
      await assert.rejects(
        vms.update(create(UpdateVMRequestSchema, { id: b.id, spec: { cpu: { cores: 14 }, memory: { sizeMib: 256n } }, updateMask: { paths: ["spec.cpu"] } })),
        (err: unknown) => err instanceof QuotaExceededError && err.message === `quota vcpus of project ${project} exceeded: limit 20, used 18, requested 4`,
      );
      assert.equal((await s.store.of(VM_KIND).get(b.id))!.spec!.cpu!.cores, 10);
      // Shrinking is never refused, even over a limit lowered below the use.
      await s.store.of(QUOTA_KIND).update(project, (q) => ((q.limits = create(QuotaLimitsSchema, { vcpus: 4n })), q));
      await vms.update(create(UpdateVMRequestSchema, { id: a.id, spec: { cpu: { cores: 6 }, memory: { sizeMib: 256n } }, updateMask: { paths: ["spec.cpu"] } }));
      await assert.rejects(vms.create(vmRequest(project, 1)), QuotaExceededError);
      assert.equal((await assertNoDrift(s.store, project)).vcpus, 16);
    });

    it("a quota removed after the ledger saw it is created anew by the next charge", async () => {
      const project = await aProject(s.store, "gone");
      const vms = service(s.store);
      await vms.create(vmRequest(project));
      await s.store.of(QUOTA_KIND).delete(project);
      await vms.create(vmRequest(project));
      assert.equal((await s.store.of(QUOTA_KIND).get(project))?.used?.vms, 1n, "charged to a new quota");
    });

    it("CreateVM in a project that does not exist (or no longer does) is NOT_FOUND naming the project, and writes nothing", async () => {
      const vms = service(s.store);
      const missing = `nope-${randomUUID().slice(0, 8)}`;
      await assert.rejects(vms.create(vmRequest(missing)), (err: Error) => err.message === `project '${missing}' not found`);
      const project = await aProject(s.store, "deleted");
      await vms.create(vmRequest(project));
      await s.store.of(PROJECT_KIND).delete(project);
      const revision = await s.store.revision();
      await assert.rejects(vms.create(vmRequest(project)), (err: Error) => err.message === `project '${project}' not found`);
      assert.equal(await s.store.revision(), revision);
      assert.equal(await s.store.of(QUOTA_KIND).get(missing), undefined);
    });

    it("the cluster default applies to projects without their own limit; -1 lifts it for one project", async () => {
      const vms = service(s.store, { vms: 2 });
      const p = await aProject(s.store, "dflt");
      await vms.create(vmRequest(p));
      await vms.create(vmRequest(p));
      await assert.rejects(vms.create(vmRequest(p)), (err: unknown) => err instanceof QuotaExceededError && /limit 2, used 2/.test(err.message));
      const free = await aProject(s.store, "free");
      await setLimits(s.store, free, { vms: -1n });
      for (let i = 0; i < 3; i++) await vms.create(vmRequest(free));
      assert.equal((await assertNoDrift(s.store, free)).vms, 3);
    });
  });
}

quotaSuite("memory", async () => {
  const store = new MemoryStore();
  return { store, close: () => store.close() };
});

quotaSuite("embedded (PGlite)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "quantix-quota-"));
  const openIt = async () => {
    const driver = await PgliteDriver.open(dir);
    await migrate(driver, () => undefined);
    return SqlStore.open(driver, SQL_OPTIONS);
  };
  const s = { store: (await openIt()) as Store, reopen: async () => (await s.store.close(), await openIt()), close: async () => (await s.store.close(), rmSync(dir, { recursive: true, force: true })) };
  return s;
});

let pg: TestPostgres | undefined;
after(async () => pg?.stop());
quotaSuite("PostgreSQL", async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase("quotas");
  const openIt = async () => {
    const driver = await PgDriver.open(url, { maxConnections: 8, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
    await migrate(driver, () => undefined);
    return SqlStore.open(driver, SQL_OPTIONS);
  };
  const s = { store: (await openIt()) as Store, reopen: async () => (await s.store.close(), await openIt()), close: () => s.store.close() };
  return s;
});
