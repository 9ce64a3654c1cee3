import { QuantixError } from "./errors.js";
import { CONTROL_CHARS, ID_PATTERN, Violations } from "./violations.js";

/** Default and largest page sizes of every List RPC. */
export const PAGE_SIZE_DEFAULT = 50;
export const PAGE_SIZE_MAX = 1000;

/** A sort order: a field and a direction. Ties are broken by id, in the same direction. */
export interface Order<F extends string> {
  readonly field: F;
  readonly desc: boolean;
}

/** The position after which the next page starts: the last item's sort key and id. */
export interface Cursor {
  readonly key: string | number;
  readonly id: string;
}

/** A validated page request. */
export interface PageRequest<F extends string> {
  readonly order: Order<F>;
  readonly size: number;
  readonly after: Cursor | undefined;
  /** The total the first page counted, carried by the token, so later pages need not count again. */
  readonly knownTotal: number | undefined;
}

/**
 * Validates page_size, order_by and page_token together. The token is bound to the
 * order and to a fingerprint of the filter, so a token from another query is rejected
 * instead of silently skipping or repeating items.
 */
export function parsePageRequest<F extends string>(
  input: { pageSize: number; pageToken: string; orderBy: string },
  fields: readonly F[],
  filterFingerprint: string,
): PageRequest<F> {
  const v = new Violations();
  if (input.pageSize < 0 || input.pageSize > PAGE_SIZE_MAX) {
    v.add("page_size", "OUT_OF_RANGE", `must be between 1 and ${PAGE_SIZE_MAX} (0 means ${PAGE_SIZE_DEFAULT}), got ${input.pageSize}`);
  }
  const order = parseOrderBy(v, input.orderBy, fields);
  let after: Cursor | undefined;
  let knownTotal: number | undefined;
  if (input.pageToken !== "" && order) {
    const decoded = decodeToken(v, input.pageToken, `${order.field}:${order.desc ? "desc" : "asc"}`, filterFingerprint);
    after = decoded?.cursor;
    knownTotal = decoded?.total;
  }
  if (v.list.length > 0 || !order) {
    throw new QuantixError("invalid_argument", `invalid request: ${v.list.map((x) => `${x.field}: ${x.description}`).join("; ")}`, v.list);
  }
  return { order, size: input.pageSize === 0 ? PAGE_SIZE_DEFAULT : input.pageSize, after, knownTotal };
}

function parseOrderBy<F extends string>(v: Violations, orderBy: string, fields: readonly F[]): Order<F> | undefined {
  const parts = orderBy.trim().split(/\s+/).filter((s) => s !== "");
  const field = (parts[0] ?? fields[0]) as F;
  const dir = (parts[1] ?? "asc").toLowerCase();
  if (!fields.includes(field) || parts.length > 2 || (dir !== "asc" && dir !== "desc")) {
    v.add("order_by", "INVALID_FORMAT", `must be one of ${fields.map((f) => `"${f}"`).join(", ")}, optionally followed by " desc" or " asc"`);
    return undefined;
  }
  return { field, desc: dir === "desc" };
}

/** Encodes the cursor after the last item of a page, and the total the first page counted. */
export function encodePageToken(order: Order<string>, filterFingerprint: string, cursor: Cursor, total?: number): string {
  const body = { v: 1, o: `${order.field}:${order.desc ? "desc" : "asc"}`, f: filterFingerprint, k: cursor.key, i: cursor.id, ...(total !== undefined ? { t: total } : {}) };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

function decodeToken(v: Violations, token: string, order: string, fingerprint: string): { cursor: Cursor; total: number | undefined } | undefined {
  let body: unknown;
  try {
    if (token.length > 2048 || !/^[A-Za-z0-9_-]+$/.test(token)) throw new Error("not base64url");
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    v.add("page_token", "INVALID_FORMAT", "is not a token returned by this API; start again with an empty page_token");
    return undefined;
  }
  // JSON.parse("null") succeeds: reading fields of null must not become an internal error.
  const b = (typeof body === "object" && body !== null ? body : {}) as { v?: unknown; o?: unknown; f?: unknown; k?: unknown; i?: unknown; t?: unknown };
  // The id and a text key are checked as ids and names are: a forged token carries no NUL to a store.
  if (b.v !== 1 || typeof b.i !== "string" || !ID_PATTERN.test(b.i) || (typeof b.k !== "string" && typeof b.k !== "number") || (typeof b.k === "string" && CONTROL_CHARS.test(b.k))) {
    v.add("page_token", "INVALID_FORMAT", "is not a token returned by this API; start again with an empty page_token");
    return undefined;
  }
  if (b.o !== order || b.f !== fingerprint) {
    v.add("page_token", "MISMATCH", "was issued for a different filter or order_by; send the same filter and order_by, or start again");
    return undefined;
  }
  // The key must have the order field's type (a time as a safe integer, a name as text),
  // so a forged token is INVALID_ARGUMENT here rather than a database error later.
  const timeOrder = order.split(":")[0]!.endsWith("_at");
  if (timeOrder ? !(typeof b.k === "number" && Number.isSafeInteger(b.k)) : typeof b.k !== "string" || b.k.length > 1024) {
    v.add("page_token", "INVALID_FORMAT", "is not a token returned by this API; start again with an empty page_token");
    return undefined;
  }
  const total = typeof b.t === "number" && Number.isInteger(b.t) && b.t >= 0 ? b.t : undefined;
  return { cursor: { key: b.k, id: b.i }, total };
}

/** Compares two (key, id) positions in ascending order. */
export function compareCursor(a: Cursor, b: Cursor): number {
  if (a.key < b.key) return -1;
  if (a.key > b.key) return 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
