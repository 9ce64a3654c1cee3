import { createHash } from "node:crypto";
import fc from "fast-check";
import { until } from "../until.js";
import { accepts, mutationArb } from "./fuzz-mutations.js";
import { FuzzSender } from "./fuzz-send.js";
import { fuzzTargets } from "./fuzz-targets.js";
import { PROTOCOLS, wireRequest, type Protocol } from "./fuzz-wire.js";

/** What a fuzz run found. */
export interface FuzzResult {
  readonly requests: number;
  readonly byProtocol: Record<Protocol, number>;
  /** Answers by code, all protocols together, and per protocol. */
  readonly byCode: Record<string, number>;
  readonly byProtocolCode: Record<Protocol, Record<string, number>>;
  /** Answers a client reads as a server fault (INTERNAL, or a bare HTTP 500), by "mutation on protocol". */
  readonly internal: Record<string, number>;
  /** Requests that got no answer at all (not a stream left open), by "mutation on protocol". */
  readonly unanswered: Record<string, number>;
  readonly ms: number;
}

/** The options of a run: the same seed and count always make the same requests. */
export interface FuzzOptions {
  readonly url: string;
  readonly seed: number;
  readonly count: number;
  /** Ids of VMs that exist (reads aim at them). */
  readonly vmIds: readonly string[];
  readonly concurrency?: number;
}

/** The requests of a run, generated from its seed by fast-check: protocol, RPC, mutation. */
function cases(o: FuzzOptions) {
  const targets = fuzzTargets(o.vmIds);
  const arb = fc.record({ protocol: fc.constantFrom(...PROTOCOLS), target: fc.nat(), mutation: mutationArb });
  return fc.sample(arb, { seed: o.seed, numRuns: o.count }).map((c) => {
    const fit = targets.filter((t) => accepts(c.mutation, t));
    const target = fit[c.target % fit.length]!;
    return { protocol: c.protocol, target, mutation: c.mutation };
  });
}

/** Sends `count` malformed requests, `concurrency` at a time, and counts the answers. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzResult> {
  const list = cases(o);
  const sender = new FuzzSender(o.url);
  const byProtocol = Object.fromEntries(PROTOCOLS.map((p) => [p, 0])) as Record<Protocol, number>;
  const byProtocolCode = Object.fromEntries(PROTOCOLS.map((p) => [p, {}])) as Record<Protocol, Record<string, number>>;
  const byCode: Record<string, number> = {};
  const internal: Record<string, number> = {};
  const unanswered: Record<string, number> = {};
  const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const c = list[next++]!;
      const code = await sender.send(wireRequest(c.protocol, c.target, c.mutation));
      byProtocol[c.protocol]++;
      bump(byCode, code);
      bump(byProtocolCode[c.protocol], code);
      const where = `${c.mutation.kind} on ${c.protocol}`;
      if (code === "internal") bump(internal, where);
      if (code === "http 500") bump(internal, `${where} (a bare HTTP 500)`);
      if (code === "no answer") bump(unanswered, where);
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency ?? 16 }, worker));
  } finally {
    sender.close();
  }
  return { requests: list.length, byProtocol, byCode, byProtocolCode, internal, unanswered, ms: performance.now() - t0 };
}

/** The store as clients see it: the revision (every write raises it), a digest of every kind's objects, and the audit trail's length. */
export interface StateDigest {
  readonly revision: string;
  readonly digest: string;
  /** Audit records kept: every write, refused or not, adds one (and a revision). */
  readonly auditRecords: number;
}

const LISTS = [
  ["Quantixkvm.compute.v1.VMService/ListVMs", "vms"],
  ["Quantixkvm.compute.v1.NodeService/ListNodes", "nodes"],
  ["Quantixkvm.compute.v1.MigrationService/ListMigrations", "migrations"],
  ["Quantixkvm.event.v1.EventService/ListEvents", "events"],
] as const;

/** Reads every kind's list (up to 1,000 objects each) over Connect JSON. */
export async function stateDigest(url: string): Promise<StateDigest> {
  const hash = createHash("sha256");
  let revision = "0";
  for (const [path, items] of LISTS) {
    const res = await fetch(`${url}/${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ pageSize: 1000 }) });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
    const page = (await res.json()) as Record<string, unknown> & { resourceVersion?: string };
    if (BigInt(page.resourceVersion ?? "0") > BigInt(revision)) revision = page.resourceVersion ?? "0";
    hash.update(JSON.stringify(page[items] ?? []));
  }
  const audit = await fetch(`${url}/Quantixkvm.audit.v1.AuditService/ListAuditRecords`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ pageSize: 1 }) });
  if (!audit.ok) throw new Error(`ListAuditRecords: HTTP ${audit.status} ${await audit.text()}`);
  const auditRecords = ((await audit.json()) as { totalCount?: number }).totalCount ?? 0;
  return { revision, digest: hash.digest("hex").slice(0, 16), auditRecords };
}

/** The state once the server's controllers are done with it: two reads `quietMs` apart agree. */
export async function settledDigest(url: string, quietMs = 300, timeoutMs = 10_000): Promise<StateDigest> {
  let last = await stateDigest(url);
  return until(async () => {
    await new Promise((r) => setTimeout(r, quietMs));
    const now = await stateDigest(url);
    const same = now.revision === last.revision && now.digest === last.digest && now.auditRecords === last.auditRecords;
    last = now;
    return same ? now : undefined;
  }, "the store to settle", timeoutMs, 0);
}

/** Whether the server answers its health check. */
export async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/_/health`, { signal: AbortSignal.timeout(5000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

/** Formats a count map as "key n, key n", largest first. */
export function countsText(m: Readonly<Record<string, number>>): string {
  const e = Object.entries(m).sort((a, b) => b[1] - a[1]);
  return e.length === 0 ? "none" : e.map(([k, n]) => `${k} ${n}`).join(", ");
}
