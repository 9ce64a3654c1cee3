import { CONTROL_CHARS, type Violations } from "@quantix/core";

/**
 * Vector clocks of the MemoryGateway (proto/virtualdom/v1/gateway.proto): writer id →
 * the number of that writer's writes observed. Missing entries count as 0.
 */
export type VClock = ReadonlyMap<string, bigint>;

/** Entries a clock may have, and a writer id's length. */
export const CLOCK_LIMITS = { maxEntries: 1024, maxWriterIdChars: 128 } as const;

/** Whether `b` covers `a`: every entry of `a` is at most `b`'s. */
export function covers(b: VClock, a: VClock): boolean {
  for (const [id, n] of a) if (n > (b.get(id) ?? 0n)) return false;
  return true;
}

/** The entry-wise maximum of two clocks. */
export function mergeClocks(a: VClock, b: VClock): Map<string, bigint> {
  const out = new Map(a);
  for (const [id, n] of b) if (n > (out.get(id) ?? 0n)) out.set(id, n);
  return out;
}

/** A clock as its wire form's map (uint64 as bigint). */
export function clockFromWire(entries: Readonly<Record<string, bigint>>): Map<string, bigint> {
  return new Map(Object.entries(entries));
}

/** A clock in its wire form, entries sorted by writer id (so equal clocks encode equally). */
export function clockToWire(clock: VClock): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const id of [...clock.keys()].sort()) out[id] = clock.get(id)!;
  return out;
}

/** A clock as JSON text for storage (counts as decimal strings: they are uint64). */
export function clockToJson(clock: VClock): string {
  const out: Record<string, string> = {};
  for (const id of [...clock.keys()].sort()) out[id] = clock.get(id)!.toString();
  return JSON.stringify(out);
}

/** The inverse of clockToJson (accepts a parsed object too, as jsonb columns come back). */
export function clockFromJson(json: string | Record<string, string>): Map<string, bigint> {
  const obj = typeof json === "string" ? (JSON.parse(json) as Record<string, string>) : json;
  return new Map(Object.entries(obj).map(([k, v]) => [k, BigInt(v)]));
}

/** Checks a request's clock: required, bounded, with sane writer ids. */
export function validateClock(v: Violations, field: string, clock: { entries: Record<string, bigint> } | undefined, writerId: string): void {
  if (!clock || Object.keys(clock.entries).length === 0) {
    v.add(field, "REQUIRED", "a vector clock is required: the writer increments its own entry before each write and sends the clock");
    return;
  }
  const ids = Object.keys(clock.entries);
  if (ids.length > CLOCK_LIMITS.maxEntries) v.add(`${field}.entries`, "OUT_OF_RANGE", `at most ${CLOCK_LIMITS.maxEntries} entries, got ${ids.length}`);
  for (const id of ids.slice(0, CLOCK_LIMITS.maxEntries)) {
    if (!validWriterId(id)) v.add(`${field}.entries[${JSON.stringify(id.slice(0, 140))}]`, "INVALID_FORMAT", writerIdRule);
  }
  if (writerId !== "" && (clock.entries[writerId] ?? 0n) === 0n) {
    v.add(`${field}.entries`, "REQUIRED", `has no entry for the writer '${writerId}': the writer increments its own entry before each write`);
  }
}

const writerIdRule = `a writer id is 1-${CLOCK_LIMITS.maxWriterIdChars} characters without control characters`;

/** Whether a writer id is acceptable (also a session's participant id). */
export function validWriterId(id: string): boolean {
  return id.length >= 1 && id.length <= CLOCK_LIMITS.maxWriterIdChars && !CONTROL_CHARS.test(id);
}

/** Checks a writer id field (empty allowed when optional). */
export function validateWriterId(v: Violations, field: string, id: string, required: boolean): void {
  if (id === "" && !required) return;
  if (!validWriterId(id)) v.add(field, id === "" ? "REQUIRED" : "INVALID_FORMAT", writerIdRule);
}
