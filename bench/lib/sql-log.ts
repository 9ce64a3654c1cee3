import { readFileSync, writeFileSync } from "node:fs";
import { openPglite, type SqlDriver } from "@quantix/server";
import type { Server } from "./proc.js";
import { nowMs, sleep } from "./stats.js";

/** A statement a store sent: in transaction `tx` (0: on its own), with its parameters as the driver got them. */
interface Sent {
  readonly tx: number;
  readonly sql: string;
  readonly params?: readonly unknown[];
}

type Tx = Parameters<Parameters<SqlDriver["transaction"]>[0]>[0];

/** What a mark is saved as among the statements: not a statement (tx -1), never replayed. */
const MARK = { tx: -1, sql: "-- mark" } as const;

/** The log line (msg) a recording server writes once it has marked its statements (on SIGUSR2). */
export const MARKED = "statements marked";

/** Marks a recording server's statements (bench/servers/recorded-embedded.ts) and waits until it says it has. */
export async function markStatements(server: Server): Promise<void> {
  const count = () => readFileSync(server.logFile, "utf8").split(MARKED).length;
  const before = count();
  process.kill(server.pid, "SIGUSR2");
  const deadline = nowMs() + 10_000;
  while (count() === before) {
    if (nowMs() > deadline) throw new Error(`${server.name} did not mark its statements within 10 s; see ${server.logFile}`);
    await sleep(10);
  }
}

/**
 * A SqlDriver that remembers every statement it passes on to `inner` (references only: the
 * store builds each statement's parameters afresh and never changes them), and writes them
 * to `file` on save(). Costs an array push per statement. mark() divides them into windows
 * that replaySql times apart.
 */
export function recordingDriver(inner: SqlDriver): SqlDriver & { save(file: string): void; mark(): void } {
  const sent: Sent[] = [];
  let txs = 0;
  const on = (tx: number, q: Tx): Tx => ({
    query: (sql, params, options) => (sent.push({ tx, sql, params: params ?? [] }), q.query(sql, params, options)),
    exec: (sql) => (sent.push({ tx, sql }), q.exec(sql)),
  });
  const root = on(0, inner);
  return {
    kind: inner.kind,
    query: root.query,
    exec: root.exec,
    transaction: (fn, options) => {
      const id = ++txs;
      return inner.transaction((tx) => fn(on(id, tx)), options);
    },
    withAdvisoryLock: (key, fn) => inner.withAdvisoryLock(key, () => fn(root)),
    listen: (channel, onNotify, onLost) => inner.listen(channel, onNotify, onLost),
    campaign: (key, onChange) => inner.campaign(key, onChange),
    close: () => inner.close(),
    mark() {
      sent.push(MARK);
    },
    save(file: string) {
      // As the driver puts them on the wire: bigint as decimal text; bytes as hex, turned back into bytes by replaySql.
      writeFileSync(file, JSON.stringify(sent, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? { hex: Buffer.from(v).toString("hex") } : v)));
    },
  };
}

/** A transaction's statements, or one statement on its own, as a unit of replay. */
type Unit = { readonly tx: number; readonly statements: Sent[] };

/** The replay of a store's statements on PGlite alone. */
export interface SqlReplay {
  /** Units (transactions and statements on their own) replayed in the timed part. */
  readonly units: number;
  readonly statements: number;
  readonly ms: number;
  /** This process's CPU (user + system) over the timed part, µs. */
  readonly cpuUs: number;
  readonly failed: number;
}

/**
 * Runs the statements `recordingDriver` saved in `file` again on PGlite alone (openPglite:
 * the embedded store's own settings), in a new database in `dir`: each transaction as one
 * (at the point it began), the rest one by one, one at a time as PGlite runs them. Times
 * the units from the first that inserts into `table` (what came before, migrations and
 * the first reads, runs untimed), as one window a mark: the first window ends at the first
 * mark, the next at the second, and so on (a transaction begun before a mark counts in the
 * window it began in).
 */
export async function replaySql(file: string, dir: string, table: string): Promise<SqlReplay[]> {
  const sent = JSON.parse(readFileSync(file, "utf8"), (_k, v: unknown) =>
    v !== null && typeof v === "object" && "hex" in v && typeof v.hex === "string" ? new Uint8Array(Buffer.from(v.hex, "hex")) : v,
  ) as Sent[];
  /** Units, and null where a mark was. */
  const units: (Unit | null)[] = [];
  const open = new Map<number, Unit>();
  for (const s of sent) {
    if (s.tx === MARK.tx) {
      units.push(null);
      continue;
    }
    if (s.tx === 0) {
      units.push({ tx: 0, statements: [s] });
      continue;
    }
    let u = open.get(s.tx);
    if (!u) open.set(s.tx, (u = { tx: s.tx, statements: [] })), units.push(u);
    u.statements.push(s);
  }
  const first = units.findIndex((u) => u?.statements.some((s) => s.sql.includes(`INSERT INTO ${table}`)));
  const db = await openPglite(dir);
  type Q = Pick<typeof db, "query" | "exec">;
  const run = (q: Q, s: Sent) => (s.params ? q.query(s.sql, s.params as unknown[]) : q.exec(s.sql));
  let failed = 0;
  const replay = async (u: Unit) => {
    try {
      if (u.tx === 0) await run(db, u.statements[0]!);
      else await db.transaction(async (tx) => { for (const s of u.statements) await run(tx, s); });
    } catch {
      failed++;
    }
  };
  /** Replays some units and says what they took. */
  const timed = async (window: Unit[]): Promise<SqlReplay> => {
    failed = 0;
    const cpu0 = process.cpuUsage();
    const t0 = nowMs();
    for (const u of window) await replay(u);
    const ms = nowMs() - t0;
    const cpu = process.cpuUsage(cpu0);
    return { units: window.length, statements: window.reduce((n, u) => n + u.statements.length, 0), ms, cpuUs: cpu.user + cpu.system, failed };
  };
  try {
    for (const u of units.slice(0, Math.max(first, 0))) if (u) await replay(u);
    const windows: Unit[][] = [[]];
    if (first >= 0) for (const u of units.slice(first)) u ? windows[windows.length - 1]!.push(u) : windows.push([]);
    const replays: SqlReplay[] = [];
    for (const w of windows) replays.push(await timed(w));
    return replays;
  } finally {
    await db.close();
  }
}
