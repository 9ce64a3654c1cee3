import cluster, { type Worker } from "node:cluster";

/** Restarts allowed within RESTART_WINDOW_MS before the supervisor gives up (a worker that cannot start). */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
const RESTART_DELAY_MS = 1000;

/** What every worker's /_/health says about its siblings (sent by the primary whenever it changes). */
export interface WorkersStatus {
  /** QUANTIX_WORKERS. */
  readonly wanted: number;
  /** Workers alive now (a dead one is replaced after RESTART_DELAY_MS). */
  readonly running: number;
  /** Workers replaced since the control plane started. */
  readonly restarts_total: number;
  /** The last worker that died, and how. */
  readonly last_exit?: { readonly pid: number; readonly how: string; readonly at: string };
}

/** The message the primary sends its workers: one key, so nothing else on the channel is mistaken for it. */
interface StatusMessage {
  readonly quantixWorkers: WorkersStatus;
}

/**
 * In a worker of `QUANTIX_WORKERS`: the latest WorkersStatus its primary sent (undefined
 * until the first, and always outside the workers mode).
 */
export function workersStatusFeed(): () => WorkersStatus | undefined {
  if (!cluster.isWorker) return () => undefined;
  let latest: WorkersStatus | undefined;
  process.on("message", (m: unknown) => {
    if (typeof m === "object" && m !== null && "quantixWorkers" in m) latest = (m as StatusMessage).quantixWorkers;
  });
  return () => latest;
}

export interface SupervisorOptions {
  /** How many worker processes serve the port. */
  readonly count: number;
  /** Where the supervisor says what it does (stderr in `npm start`). */
  readonly say: (line: string) => void;
  /** Ends the process (process.exit; a test may observe it instead). */
  readonly exit: (code: number) => void;
}

/**
 * The primary process of `QUANTIX_WORKERS=N`: it serves nothing itself. It forks the
 * first worker alone and waits until that one listens (so the store's migrations and the
 * demo data are applied once), then the others. The workers share the listening socket
 * and each accepts for itself (SCHED_NONE), so the kernel spreads the connections (and
 * the watch streams on them) over the cores and the primary is never on a connection's
 * path. (With node:cluster's round robin the primary accepts and hands each connection
 * over; in testing one connection once stayed in the primary, never handed on.) A worker that dies is replaced after a second, at most
 * MAX_RESTARTS times a minute; SIGTERM or SIGINT stops every worker gracefully, and the
 * primary exits when they have.
 */
export function superviseWorkers(o: SupervisorOptions): { stop(signal: string): void } {
  const workers = new Set<Worker>();
  const restarts: number[] = [];
  let stopping = false;
  let failed = false;
  let firstListening = false;
  let restartsTotal = 0;
  let lastExit: WorkersStatus["last_exit"];

  // Every worker hears the same status whenever a worker starts serving or dies, so each one's
  // /_/health tells whether its siblings are all there and what happened to the last that died.
  const announce = () => {
    const m: StatusMessage = { quantixWorkers: { wanted: o.count, running: workers.size, restarts_total: restartsTotal, ...(lastExit ? { last_exit: lastExit } : {}) } };
    for (const w of workers) if (w.isConnected()) w.send(m, undefined, () => undefined);
  };

  const fork = (): Worker => {
    const w = cluster.fork();
    workers.add(w);
    w.once("listening", (addr: { address: string; port: number }) => {
      o.say(`quantix: worker ${w.id} (pid ${w.process.pid}) serves ${addr.address}:${addr.port}`);
      // Not on "online": the worker's module code has not yet listened for messages then.
      announce();
      if (!firstListening) {
        firstListening = true;
        for (let i = 1; i < o.count; i++) fork();
      }
    });
    w.once("exit", (code: number | null, signal: string | null) => {
      workers.delete(w);
      if (stopping) {
        if (code !== 0) failed = true;
        if (workers.size === 0) o.exit(failed ? 1 : 0);
        return;
      }
      const how = signal ? `signal ${signal}` : `code ${code}`;
      lastExit = { pid: w.process.pid ?? 0, how, at: new Date().toISOString() };
      if (!firstListening) {
        // The first worker could not start: the same configuration will not do better.
        o.say(`quantix: the first worker exited (${how}) before it listened; see its message above`);
        return stopAll(1);
      }
      const now = Date.now();
      while (restarts.length > 0 && restarts[0]! < now - RESTART_WINDOW_MS) restarts.shift();
      if (restarts.length >= MAX_RESTARTS) {
        o.say(`quantix: worker ${w.id} exited (${how}); ${MAX_RESTARTS} workers were replaced within a minute, so the control plane stops`);
        return stopAll(1);
      }
      restarts.push(now);
      restartsTotal++;
      announce();
      o.say(`quantix: worker ${w.id} (pid ${w.process.pid}) exited (${how}); starting another in ${RESTART_DELAY_MS / 1000} s`);
      setTimeout(() => stopping || fork(), RESTART_DELAY_MS).unref();
    });
    return w;
  };

  const stopAll = (code: number) => {
    if (code !== 0) failed = true;
    if (stopping) return;
    stopping = true;
    if (workers.size === 0) return o.exit(failed ? 1 : 0);
    for (const w of workers) w.process.kill("SIGTERM");
  };

  cluster.schedulingPolicy = cluster.SCHED_NONE;
  o.say(`quantix: ${o.count} workers share the port (QUANTIX_WORKERS)`);
  fork();
  return {
    stop(signal: string) {
      if (stopping) return;
      o.say(`quantix: ${signal} received, stopping ${workers.size} workers`);
      stopAll(0);
    },
  };
}
