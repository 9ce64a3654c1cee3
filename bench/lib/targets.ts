import type { Target } from "./report.js";

/**
 * Issue 19's target rows ("Performance, round two"), as its table states them: every
 * figure a ratio against a baseline measured in the same run, or an absolute limit. The
 * bench prints each with a "met" column; `npm run bench` and `npm run bench:store` read
 * them from here so that the two tables and the issue say the same thing.
 */
export const ISSUE_19 = {
  /** Unary GetVM, gRPC h2c, against bare node:http2: at least 0.75 (kept from round one). */
  unaryGrpc: { op: ">=", value: 0.75, on: "ratio" },
  /** Unary GetVM, gRPC, p50 at concurrency 1, against bare node:http2: at most 1.3. */
  unaryP50: { op: "<=", value: 1.3, on: "ratio" },
  /** Unary GetVM over Connect (binary h2c; JSON over HTTP/1.1) against bare: at least 0.5. */
  connect: { op: ">=", value: 0.5, on: "ratio" },
  /** CreateVM over gRPC into the embedded store, 64 in flight: at least 2,000/s. */
  embeddedCreates: { op: ">=", value: 2000, on: "value", unit: "req/s" },
  /** CreateVM into PostgreSQL against a raw INSERT on the same driver: at least 0.5. */
  postgresCreates: { op: ">=", value: 0.5, on: "ratio" },
  /** ListVMs on PostgreSQL, the page at 90% of 100,000, against raw keyset SQL: at most 1.5×. */
  postgresDeepPage: { op: "<=", value: 1.5, on: "ratio" },
  /** 10,000 watchers on one connection, write sent → delivery p99, against bare fan-out: at most 1.1×. */
  oneConnection: { op: "<=", value: 1.1, on: "ratio" },
  /** 10,000 watchers over 100 connections, write → delivery p99: at most 100 ms. */
  hundredConnections: { op: "<=", value: 100, on: "value", unit: "ms" },
  /** Scheduler, 10,000 VMs over 1,000 nodes, every filter: 10,000 placements/s, so at most 100 µs each. */
  schedulerUs: { op: "<=", value: 100, on: "value", unit: "µs" },
  /** StartVM through the control plane until QEMU runs, against QEMU started and `cont`-ed: at most 1.1. */
  startVm: { op: "<=", value: 1.1, on: "ratio" },
  /** MigrateVM through the control plane, wall time, against QEMU's own migration: at most 1.3. */
  migrateVm: { op: "<=", value: 1.3, on: "ratio" },
  /** Control plane RSS at idle after `npm start` (embedded store, demo data): at most 250 MiB. */
  idleRss: { op: "<=", value: 250, on: "value", unit: "MiB" },
} as const satisfies Record<string, Target>;

/** The first bench's limit on 10,000 watchers (kept): a write acknowledged → delivered to all within 100 ms (p99). */
export const WATCH_P99 = { op: "<=", value: 100, on: "value", unit: "ms" } as const satisfies Target;
