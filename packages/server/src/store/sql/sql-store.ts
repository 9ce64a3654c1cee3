import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { type NodeQuery, type Store, type StoreHealth, type VmQuery } from "@quantix/core";
import type { WatchHubLimits } from "../watch-hub.js";
import { ChangeTailer } from "./change-tailer.js";
import { Compactor } from "./compactor.js";
import { SqlCollection } from "./sql-collection.js";
import { big, type Param, type SqlDriver } from "./sql-driver.js";

/** Tuning of a SQL store. */
export interface SqlStoreOptions {
  /** Revisions of change history kept for resuming watchers (and, per kind, in memory). */
  readonly historyRevisions: number;
  /** Undelivered changes a slow watcher may accumulate. */
  readonly maxBacklog: number;
  /** How often the change tailer polls besides LISTEN/NOTIFY (a safety net). */
  readonly pollMs: number;
  readonly onError: (err: unknown) => void;
  /** Called once the store has closed its database (the embedded store releases its directory's lock). */
  readonly onClosed?: () => void;
}

function tsMillis(ts: { seconds: bigint; nanos: number } | undefined): number {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0;
}

/** `labels @> {...}` (all must match), served by the GIN index. */
function labelCondition(labels: Readonly<Record<string, string>> | undefined, params: Param[]): string[] {
  if (!labels || Object.keys(labels).length === 0) return [];
  params.push(JSON.stringify(labels));
  return [`labels @> $${params.length}::jsonb`];
}

/**
 * The durable Store: VMs and nodes in SQL tables, one revision sequence, a change history
 * followed by a tailer that feeds the same in-memory watch hubs the memory store uses. The
 * embedded (PGlite) and PostgreSQL engines share it through SqlDriver.
 */
export class SqlStore implements Store {
  readonly vms: SqlCollection<typeof VirtualMachineSchema, VmQuery>;
  readonly nodes: SqlCollection<typeof NodeSchema, NodeQuery>;
  private readonly tailer: ChangeTailer;
  readonly compactor: Compactor;

  private constructor(
    readonly driver: SqlDriver,
    startRevision: bigint,
    private readonly options: SqlStoreOptions,
  ) {
    const limits: WatchHubLimits = { historySize: options.historyRevisions, maxBacklog: options.maxBacklog };
    this.tailer = new ChangeTailer(driver, startRevision, options.pollMs, options.onError);
    this.compactor = new Compactor(driver, options.historyRevisions);
    this.vms = new SqlCollection(
      {
        kind: "VM",
        table: "quantix_vms",
        schema: VirtualMachineSchema,
        id: (vm) => vm.id,
        uniqueConstraint: "quantix_vms_project_name",
        describeClash: (vm) => `a VM named '${vm.name}' already exists in project '${vm.projectId}'`,
        columns: (vm) => ({
          project_id: vm.projectId,
          name: vm.name,
          labels: JSON.stringify(vm.labels),
          state: vm.status?.state ?? 0,
          node_id: vm.status?.nodeId ?? "",
          created_ms: tsMillis(vm.createdAt),
        }),
        where: (q, params) => {
          const c: string[] = [];
          if (q.projectId) c.push(`project_id = $${params.push(q.projectId)}`);
          if (q.nodeId) c.push(`node_id = $${params.push(q.nodeId)}`);
          if (q.states && q.states.length > 0) c.push(`state = ANY($${params.push(q.states.map(Number))}::int[])`);
          return [...c, ...labelCondition(q.labels, params)];
        },
        orderColumn: (field) => (field === "name" ? { column: "name", type: "text" } : { column: "created_ms", type: "bigint" }),
        pageOf: (q) => q,
      },
      driver,
      this.tailer,
      this.compactor,
      limits,
    );
    this.nodes = new SqlCollection(
      {
        kind: "node",
        table: "quantix_nodes",
        schema: NodeSchema,
        id: (n) => n.id,
        uniqueConstraint: "quantix_nodes_hostname",
        describeClash: (n) => `a node with hostname '${n.hostname}' is already registered`,
        columns: (n) => ({
          hostname: n.hostname,
          labels: JSON.stringify(n.labels),
          phase: n.status?.phase ?? 0,
          schedulable: n.spec?.schedulable ?? false,
          created_ms: tsMillis(n.createdAt),
        }),
        where: (q, params) => {
          const c: string[] = [];
          if (q.hostname !== undefined) c.push(`hostname = $${params.push(q.hostname)}`);
          if (q.schedulableOnly) c.push("schedulable");
          if (q.phases && q.phases.length > 0) c.push(`phase = ANY($${params.push(q.phases.map(Number))}::int[])`);
          return [...c, ...labelCondition(q.labels, params)];
        },
        orderColumn: (field) => (field === "hostname" ? { column: "hostname", type: "text" } : { column: "created_ms", type: "bigint" }),
        pageOf: (q) => q,
      },
      driver,
      this.tailer,
      this.compactor,
      limits,
    );
  }

  /** Opens a store on a migrated database and starts following its changes. */
  static async open(driver: SqlDriver, options: SqlStoreOptions): Promise<SqlStore> {
    const { rows } = await driver.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1");
    const store = new SqlStore(driver, big(rows[0]?.revision ?? 0), options);
    await store.tailer.start();
    return store;
  }

  async revision(): Promise<bigint> {
    const { rows } = await this.driver.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1");
    return big(rows[0]?.revision ?? 0);
  }

  async health(): Promise<StoreHealth> {
    try {
      return { ok: true, kind: this.driver.kind, revision: (await this.revision()).toString() };
    } catch (err) {
      return { ok: false, kind: this.driver.kind, revision: this.tailer.revision.toString(), detail: `the database does not answer: ${(err as Error).message}` };
    }
  }

  /**
   * Runs `seed` once in the life of the database: only if nothing was ever written
   * (revision 0) and it has not run before. Replicas starting together take turns.
   */
  async seedOnce(seed: () => Promise<void>): Promise<boolean> {
    return this.driver.withAdvisoryLock(0x7175616e74697831n, async (conn) => {
      const { rows } = await conn.query<{ revision: unknown; demo_seeded: boolean }>("SELECT revision, demo_seeded FROM quantix_meta WHERE id = 1");
      if (rows[0]?.demo_seeded || big(rows[0]?.revision ?? 0) !== 0n) return false;
      await seed();
      await conn.query("UPDATE quantix_meta SET demo_seeded = true WHERE id = 1");
      return true;
    });
  }

  lead(onChange: (leader: boolean) => void): () => Promise<void> {
    return this.driver.campaign(0x7175616e7469786cn, onChange);
  }

  async close(): Promise<void> {
    await this.tailer.stop();
    await this.driver.close();
    this.options.onClosed?.();
  }
}
