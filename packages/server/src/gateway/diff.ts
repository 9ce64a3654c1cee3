/**
 * The MemoryGateway's diff language (docs/api/memory-gateway.md, "The diff language"): a
 * BSON document of MongoDB update operators ($set, $unset, $inc, $push, $pop), checked by
 * {@link parseDiff} and applied to a BSON document by {@link applyDiff}. Pure: no I/O.
 *
 * Why raw bytes rather than BSON.deserialize/serialize: a JS object reorders integer-like
 * keys ({b, "2"} comes back as {"2", b}) and loses repeated keys, and a round trip
 * allocates an object per value and copies every value. Here a document is a tree of BSON
 * elements whose values stay offsets into the input; only the documents and arrays on a
 * changed path are opened, and the result is written once into a buffer of its exact
 * size. Unchanged values are copied byte for byte, so types (int32, int64, double,
 * decimal128, binary subtypes, dates...) and key order survive exactly, and a 100 MB
 * binary $set costs one copy of its payload. The diff itself is fully validated once with
 * BSON.deserialize (lengths, terminators, UTF-8 of strings), which keeps binaries as views.
 *
 * One file on purpose (the lead's brief), hence over 400 lines: parsing and applying share
 * the element scan and tree.
 */
import { BSON } from "bson";
import { QuantixError, type FieldViolation } from "@quantix/core";

/** Limits, explicit. */
export const DIFF_LIMITS = {
  /** A diff's BSON size (WriteDiffRequest.diff_bson: "at most 100 MiB"). */
  maxDiffBytes: 100 * 1024 * 1024,
  /** A document's BSON size after a diff. */
  maxDocumentBytes: 128 * 1024 * 1024,
  /** Nesting levels of a document: its top-level fields are level 1. */
  maxDepth: 100,
  /** A path's length in UTF-8 bytes. */
  maxPathBytes: 1024,
  /** Paths in one diff, over all its operators. */
  maxPaths: 10_000,
  /** The highest array index a $set, $inc or $push may create (padding with nulls). */
  maxArrayIndex: 1_000_000,
} as const;

/** The BSON bytes of the empty document {}. */
export const EMPTY_DOCUMENT: Uint8Array = Uint8Array.of(5, 0, 0, 0, 0);

/** The operators of the language, in the order the docs list them. */
export const DIFF_OPERATORS = ["$set", "$unset", "$inc", "$push", "$pop"] as const;
/** One of {@link DIFF_OPERATORS}. */
export type DiffOperator = (typeof DIFF_OPERATORS)[number];

/** A BSON value as it was written: its type byte, and its value bytes at src[start, end). */
export interface RawValue {
  readonly kind: "raw";
  readonly type: number;
  readonly src: Uint8Array;
  readonly start: number;
  readonly end: number;
}

/** A number $inc can add: int32, int64 or double. */
export type IncAmount =
  | { readonly type: typeof T.int32 | typeof T.double; readonly value: number }
  | { readonly type: typeof T.int64; readonly value: bigint };

/** One checked change of a diff, on one path. */
export type DiffOp = { readonly path: string; readonly segments: readonly string[] } & (
  | { readonly op: "$set"; readonly value: RawValue }
  | { readonly op: "$unset" }
  | { readonly op: "$inc"; readonly amount: IncAmount }
  | { readonly op: "$push"; readonly values: readonly RawValue[] }
  | { readonly op: "$pop"; readonly first: boolean }
);

/** A checked diff. */
export interface ParsedDiff {
  /** Every path the diff changes, dot-separated, in the order given (for conflict detection). */
  readonly paths: readonly string[];
  /** The diff's BSON size in bytes. */
  readonly sizeBytes: number;
  /** The changes, in the order given; they touch disjoint paths. */
  readonly ops: readonly DiffOp[];
  /** The request field the diff came from, to name paths in apply errors. */
  readonly field: string;
}

/** BSON element type bytes (bsonspec.org). */
const T = {
  double: 1, string: 2, document: 3, array: 4, binary: 5, undefined: 6, objectId: 7, bool: 8,
  date: 9, null: 10, regex: 11, dbPointer: 12, javascript: 13, symbol: 14, javascriptWithScope: 15,
  int32: 16, timestamp: 17, int64: 18, decimal128: 19, minKey: 255, maxKey: 127,
} as const;
const TYPE_NAMES = new Map<number, string>(Object.entries(T).map(([name, type]) => [type, name]));
const typeName = (type: number) => TYPE_NAMES.get(type) ?? `type 0x${type.toString(16)}`;

const utf8 = new TextDecoder("utf-8", { fatal: true });
const NUMERIC_SEGMENT = /^(0|[1-9][0-9]*)$/;
/** Violations reported at most, so that a diff with 10,000 bad paths gives a readable error. */
const MAX_VIOLATIONS = 20;

/** Whether two dot-separated paths touch the same data: equal, or one is a prefix of the other at a segment boundary. */
export function pathsOverlap(a: string, b: string): boolean {
  const [short, long] = a.length <= b.length ? [a, b] : [b, a];
  return long.startsWith(short) && (long.length === short.length || long[short.length] === ".");
}

/** Stops parsing once enough violations are collected. */
class TooManyViolations extends Error {}

class Collector {
  readonly list: FieldViolation[] = [];
  add(field: string, reason: string, description: string): void {
    this.list.push({ field, reason, description });
    if (this.list.length >= MAX_VIOLATIONS) throw new TooManyViolations();
  }
  /** Records a violation; returns false, for checks that return whether all is well. */
  fail(field: string, reason: string, description: string): false {
    this.add(field, reason, description);
    return false;
  }
}

/**
 * Parses and checks a diff (BSON bytes). Throws INVALID_ARGUMENT with field violations on
 * `field` naming what is wrong, e.g. field "diff_bson.$set.a..b": "empty path segment".
 */
export function parseDiff(bytes: Uint8Array, field = "diff_bson"): ParsedDiff {
  const v = new Collector();
  const ops: DiffOp[] = [];
  try {
    parseInto(bytes, field, v, ops);
  } catch (e) {
    // An element the full parse accepted but the element scan did not: still bad input.
    if (e instanceof QuantixError && e.code === "data_loss") v.list.push({ field, reason: "INVALID_FORMAT", description: e.message });
    else if (!(e instanceof TooManyViolations)) throw e;
  }
  if (v.list.length > 0) {
    const more = v.list.length >= MAX_VIOLATIONS ? " (first violations only)" : "";
    const summary = v.list.map((x) => `${x.field}: ${x.description}`).join("; ");
    throw new QuantixError("invalid_argument", `invalid diff: ${summary}${more}`, v.list);
  }
  return { paths: ops.map((o) => o.path), sizeBytes: bytes.length, ops, field };
}

function parseInto(bytes: Uint8Array, field: string, v: Collector, ops: DiffOp[]): void {
  if (bytes.length === 0) return v.add(field, "REQUIRED", "is required: a BSON document of update operators, e.g. {$set: {path: value}}");
  if (bytes.length > DIFF_LIMITS.maxDiffBytes) {
    return v.add(field, "OUT_OF_RANGE", `a diff is at most ${DIFF_LIMITS.maxDiffBytes} bytes (100 MiB), got ${bytes.length}`);
  }
  try {
    // Full validation (lengths, terminators, UTF-8); binaries stay views, nothing is kept.
    BSON.deserialize(bytes, { promoteValues: false, bsonRegExp: true });
  } catch (e) {
    return v.add(field, "INVALID_FORMAT", `does not parse as a BSON document: ${e instanceof Error ? e.message : String(e)}`);
  }
  const top = elements({ kind: "raw", type: T.document, src: bytes, start: 0, end: bytes.length }, field);
  if (top.length === 0) return v.add(field, "REQUIRED", `an empty diff changes nothing; give at least one of ${DIFF_OPERATORS.join(", ")}`);
  const seenOps = new Set<string>();
  const given: GivenPath[] = [];
  let pathCount = 0;
  for (const el of top) {
    const opField = `${field}.${el.name}`;
    if (!el.name.startsWith("$")) {
      v.add(opField, "INVALID_FORMAT", "a replacement document is not a diff; use $set (top-level fields must be update operators)");
      continue;
    }
    if (!(DIFF_OPERATORS as readonly string[]).includes(el.name)) {
      v.add(opField, "INVALID_FORMAT", `unknown operator ${el.name}; supported: ${DIFF_OPERATORS.join(", ")}`);
      continue;
    }
    if (seenOps.has(el.name)) {
      v.add(opField, "INVALID_FORMAT", `operator ${el.name} given twice; put all its paths in one document`);
      continue;
    }
    seenOps.add(el.name);
    const op = el.name as DiffOperator;
    if (el.value.type !== T.document) {
      v.add(opField, "INVALID_FORMAT", `the argument of ${op} must be a document {path: value}, got ${typeName(el.value.type)}`);
      continue;
    }
    const args = elements(el.value, opField);
    if (args.length === 0) v.add(opField, "REQUIRED", `the argument of ${op} is empty; give at least one path`);
    for (const arg of args) {
      if (++pathCount > DIFF_LIMITS.maxPaths) return v.add(field, "TOO_MANY", `a diff changes at most ${DIFF_LIMITS.maxPaths} paths`);
      const pathField = `${opField}.${arg.name}`;
      const segments = checkPath(arg.name, pathField, v);
      if (!segments) continue;
      given.push({ path: arg.name, segments, field: pathField });
      const parsed = parseArgument(op, arg.name, segments, arg.value, pathField, v);
      if (parsed) ops.push(parsed);
    }
  }
  checkOverlaps(given, v);
}

/** Splits and checks a path; undefined when it is invalid (a violation is recorded). */
function checkPath(path: string, field: string, v: Collector): string[] | undefined {
  if (path === "") return void v.add(field, "INVALID_FORMAT", "empty path");
  const bytes = Buffer.byteLength(path, "utf8");
  if (bytes > DIFF_LIMITS.maxPathBytes) {
    return void v.add(field, "INVALID_LENGTH", `a path is at most ${DIFF_LIMITS.maxPathBytes} bytes, got ${bytes}`);
  }
  if (path.includes("\0")) return void v.add(field, "INVALID_FORMAT", "a path must not contain NUL");
  const segments = path.split(".");
  if (segments.length > DIFF_LIMITS.maxDepth) {
    return void v.add(field, "OUT_OF_RANGE", `a path has at most ${DIFF_LIMITS.maxDepth} segments (nesting levels), got ${segments.length}`);
  }
  for (const s of segments) {
    if (s === "") return void v.add(field, "INVALID_FORMAT", "empty path segment");
    if (s.startsWith("$")) {
      return void v.add(field, "INVALID_FORMAT", `path segment '${s}' starts with '$' (positional operators are not supported)`);
    }
  }
  return segments;
}

/** A path of the diff and where it was given, for the overlap check. */
interface GivenPath {
  readonly path: string;
  readonly segments: readonly string[];
  readonly field: string;
}

/**
 * Records a violation on each path that equals or overlaps a path given before it. Sorted
 * by segments, a path is followed by the paths it is a prefix of, so comparing neighbours
 * finds every overlapping diff without an index of all prefixes (10,000 paths of 100
 * segments would make a million).
 */
function checkOverlaps(given: readonly GivenPath[], v: Collector): void {
  const order = given.map((_, i) => i).sort((x, y) => compareSegments(given[x]!.segments, given[y]!.segments) || x - y);
  for (let k = 1; k < order.length; k++) {
    const [i, j] = [order[k - 1]!, order[k]!];
    const [a, b] = [given[i]!, given[j]!];
    if (!a.segments.every((s, n) => b.segments[n] === s)) continue; // a sorts first: only it can be the prefix
    const [earlier, later] = i < j ? [a, b] : [b, a];
    const what = a.path === b.path ? `path '${later.path}' given twice` : `path '${later.path}' overlaps path '${earlier.path}'`;
    v.add(later.field, "CONFLICT", `${what} in the same diff (would create a conflict)`);
  }
}

function compareSegments(a: readonly string[], b: readonly string[]): number {
  for (let n = 0; n < a.length && n < b.length; n++) {
    if (a[n] !== b[n]) return a[n]! < b[n]! ? -1 : 1;
  }
  return a.length - b.length;
}

function parseArgument(op: DiffOperator, path: string, segments: string[], value: RawValue, field: string, v: Collector): DiffOp | undefined {
  const base = { path, segments };
  switch (op) {
    case "$set":
      return checkValue(value, segments.length, field, v) ? { ...base, op, value } : undefined;
    case "$unset":
      return { ...base, op }; // MongoDB ignores the argument's value
    case "$inc": {
      if (value.type === T.decimal128) return void v.add(field, "INVALID_FORMAT", "$inc of a decimal128 is not supported; use int32, int64 or double");
      const amount = readNumber(value);
      if (!amount) return void v.add(field, "INVALID_FORMAT", `$inc needs a number (int32, int64 or double), got ${typeName(value.type)}`);
      return { ...base, op, amount };
    }
    case "$push": {
      const each = value.type === T.document ? elements(value, field) : [];
      if (each.some((e) => e.name.startsWith("$"))) {
        const [first] = each;
        if (each.length !== 1 || first?.name !== "$each") {
          return void v.add(field, "INVALID_FORMAT", "$push takes a value or {$each: [values]}; other modifiers ($slice, $sort, $position) are not supported");
        }
        if (first.value.type !== T.array) return void v.add(`${field}.$each`, "INVALID_FORMAT", `$each needs an array, got ${typeName(first.value.type)}`);
        if (!checkValue(first.value, segments.length, `${field}.$each`, v)) return undefined;
        return { ...base, op, values: (open(first.value, field) as Arr).items as RawValue[] };
      }
      return checkValue(value, segments.length + 1, field, v) ? { ...base, op, values: [value] } : undefined;
    }
    case "$pop": {
      const n = readNumber(value);
      const one = n?.type === T.int64 ? (n.value === 1n ? 1 : n.value === -1n ? -1 : 0) : n?.value;
      if (one !== 1 && one !== -1) return void v.add(field, "INVALID_FORMAT", "$pop needs 1 (remove the last element) or -1 (remove the first)");
      return { ...base, op, first: one === -1 };
    }
    default: {
      const never: never = op;
      throw new Error(`unhandled operator ${String(never)}`);
    }
  }
}

/**
 * Checks a value written at nesting `level` (a path of n segments puts it at level n):
 * nested documents and arrays stay within maxDepth, field names are addressable by a path,
 * arrays are numbered 0, 1, 2..., and no deprecated type that BSON libraries rewrite.
 */
function checkValue(value: RawValue, level: number, field: string, v: Collector): boolean {
  if (value.type === T.undefined) return v.fail(field, "INVALID_FORMAT", "undefined (BSON type 6) is deprecated; use null");
  if (value.type === T.dbPointer) return v.fail(field, "INVALID_FORMAT", "DBPointer (BSON type 12) is deprecated; use a document");
  if (value.type !== T.document && value.type !== T.array) return true;
  if (level + 1 > DIFF_LIMITS.maxDepth) return v.fail(field, "OUT_OF_RANGE", `nested deeper than ${DIFF_LIMITS.maxDepth} levels`);
  const names = new Set<string>();
  const src = value.src;
  let ok = true;
  let i = 0;
  scan(value, field, (type, nameStart, nameEnd, start, end) => {
    if (!ok) return;
    if (value.type === T.array) {
      if (!isIndexName(src, nameStart, nameEnd, i)) {
        ok = v.fail(`${field}.${decodeName(src, nameStart, nameEnd, field)}`, "INVALID_FORMAT", `array keys must be 0, 1, 2, ... in order; key ${i} is not`);
      }
      i++;
      if (ok && (type === T.document || type === T.array || type === T.undefined || type === T.dbPointer)) {
        ok = checkValue({ kind: "raw", type, src, start, end }, level + 1, `${field}.${i - 1}`, v);
      }
      return;
    }
    const name = decodeName(src, nameStart, nameEnd, field);
    const at = `${field}.${name}`;
    if (name === "" || name.includes(".") || name.startsWith("$")) {
      ok = v.fail(at, "INVALID_FORMAT", "a field name must be non-empty, without '.', and not start with '$' (a path could not address it)");
    } else if (names.has(name)) {
      ok = v.fail(at, "INVALID_FORMAT", `field name '${name}' given twice`);
    }
    names.add(name);
    if (ok) ok = checkValue({ kind: "raw", type, src, start, end }, level + 1, at, v);
  });
  return ok;
}

/** Whether the name at src[start, end) is the array index i written in decimal. */
function isIndexName(src: Uint8Array, start: number, end: number, i: number): boolean {
  if (end === start || (src[start] === 0x30 && end - start > 1)) return false;
  let n = 0;
  for (let k = start; k < end; k++) {
    const d = src[k]! - 0x30;
    if (d < 0 || d > 9) return false;
    n = n * 10 + d;
  }
  return n === i;
}

function readNumber(value: RawValue): IncAmount | undefined {
  const view = new DataView(value.src.buffer, value.src.byteOffset + value.start, value.end - value.start);
  if (value.type === T.int32) return { type: T.int32, value: view.getInt32(0, true) };
  if (value.type === T.double) return { type: T.double, value: view.getFloat64(0, true) };
  if (value.type === T.int64) return { type: T.int64, value: view.getBigInt64(0, true) };
  return undefined;
}

// ---- the element tree ----

/**
 * An opened document: its fields in order; removed fields are undefined until written.
 * A document of a few fields is searched in place; a larger one gets an index by name.
 */
interface Doc {
  readonly kind: "doc";
  readonly names: string[];
  readonly values: (Value | undefined)[];
  index: Map<string, number> | undefined;
}
const INDEX_FROM_FIELDS = 16;
/** An opened array. */
interface Arr {
  readonly kind: "arr";
  readonly items: Value[];
}
type Value = RawValue | Doc | Arr;
type Container = Doc | Arr;

interface Element {
  readonly name: string;
  readonly value: RawValue;
}

const corrupt = (where: string, what: string) => new QuantixError("data_loss", `${where}: not a valid BSON document: ${what}`);

/**
 * Calls visit with each element of the document (or array) `doc`, checking that every
 * value lies inside it. Allocates nothing per element: documents may hold millions.
 */
function scan(doc: RawValue, where: string, visit: (type: number, nameStart: number, nameEnd: number, start: number, end: number) => void): void {
  const { src, start, end } = doc;
  const int32 = (at: number) => (at + 4 <= last ? src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16) | (src[at + 3]! << 24) : -1);
  const last = end - 1; // the terminating NUL
  if (end - start < 5 || int32(start) !== end - start || src[last] !== 0) throw corrupt(where, `its size does not match its ${end - start} bytes`);
  let i = start + 4;
  while (i < last) {
    const type = src[i++]!;
    const nameStart = i;
    while (i < last && src[i] !== 0) i++;
    if (i >= last) throw corrupt(where, "a field name runs past the end");
    const nameEnd = i++;
    let length: number;
    switch (type) {
      case T.double: case T.date: case T.timestamp: case T.int64: length = 8; break;
      case T.int32: length = 4; break;
      case T.objectId: length = 12; break;
      case T.decimal128: length = 16; break;
      case T.bool: length = 1; break;
      case T.undefined: case T.null: case T.minKey: case T.maxKey: length = 0; break;
      case T.regex: {
        let j = i;
        while (j < last && src[j] !== 0) j++;
        j++;
        while (j < last && src[j] !== 0) j++;
        length = j + 1 - i;
        break;
      }
      case T.document: case T.array: case T.javascriptWithScope: length = int32(i); break;
      case T.string: case T.javascript: case T.symbol: case T.binary: case T.dbPointer: {
        const n = int32(i);
        length = n < 0 ? -1 : n + 4 + (type === T.binary ? 1 : type === T.dbPointer ? 12 : 0);
        break;
      }
      default:
        throw corrupt(where, `unknown element type 0x${type.toString(16)}`);
    }
    if (length < 0 || i + length > last) throw corrupt(where, "a value runs past the end of its document");
    visit(type, nameStart, nameEnd, i, i + length);
    i += length;
  }
}

/** A field name: short ASCII names without a TextDecoder call (most names). */
function decodeName(src: Uint8Array, start: number, end: number, where: string): string {
  if (end - start <= 32) {
    let name = "";
    for (let k = start; k < end; k++) {
      const b = src[k]!;
      if (b >= 0x80) return decodeUtf8(src, start, end, where);
      name += String.fromCharCode(b);
    }
    return name;
  }
  return decodeUtf8(src, start, end, where);
}

function decodeUtf8(src: Uint8Array, start: number, end: number, where: string): string {
  try {
    return utf8.decode(src.subarray(start, end));
  } catch {
    throw corrupt(where, "a field name is not valid UTF-8");
  }
}

/** The elements of a document with their names (for documents of a handful of fields). */
function elements(doc: RawValue, where: string): Element[] {
  const out: Element[] = [];
  const src = doc.src;
  scan(doc, where, (type, nameStart, nameEnd, start, end) => {
    out.push({ name: decodeName(src, nameStart, nameEnd, where), value: { kind: "raw", type, src, start, end } });
  });
  return out;
}

function open(raw: RawValue, where: string): Container {
  const src = raw.src;
  if (raw.type === T.array) {
    const items: Value[] = [];
    scan(raw, where, (type, _ns, _ne, start, end) => items.push({ kind: "raw", type, src, start, end }));
    return { kind: "arr", items };
  }
  const doc = newDoc();
  scan(raw, where, (type, nameStart, nameEnd, start, end) => {
    doc.names.push(decodeName(src, nameStart, nameEnd, where));
    doc.values.push({ kind: "raw", type, src, start, end });
  });
  return doc;
}

function newDoc(): Doc {
  return { kind: "doc", names: [], values: [], index: undefined };
}

/** Where a field is (the first, should a stored document repeat a name). */
function fieldIndex(doc: Doc, name: string): number | undefined {
  if (!doc.index && doc.names.length > INDEX_FROM_FIELDS) {
    doc.index = new Map();
    for (let i = doc.names.length - 1; i >= 0; i--) if (doc.values[i] !== undefined) doc.index.set(doc.names[i]!, i);
  }
  if (doc.index) return doc.index.get(name);
  for (let i = 0; i < doc.names.length; i++) if (doc.names[i] === name && doc.values[i] !== undefined) return i;
  return undefined;
}

function setField(doc: Doc, name: string, value: Value): void {
  const i = fieldIndex(doc, name);
  if (i !== undefined) {
    doc.values[i] = value;
    return;
  }
  doc.index?.set(name, doc.names.length);
  doc.names.push(name);
  doc.values.push(value);
}

const NULL: RawValue = { kind: "raw", type: T.null, src: EMPTY_DOCUMENT, start: 0, end: 0 };
const describe = (v: Value): string => (v.kind === "raw" ? typeName(v.type) : v.kind === "doc" ? "document" : "array");

// ---- apply ----

/** Why a diff cannot apply to a document: FAILED_PRECONDITION naming the path. */
function cannot(diff: ParsedDiff, op: DiffOp, description: string): QuantixError {
  const field = `${diff.field}.${op.op}.${op.path}`;
  return new QuantixError("failed_precondition", `the diff cannot apply to this document: ${field}: ${description}`, [
    { field, reason: "FAILED_PRECONDITION", description },
  ]);
}

/**
 * Applies a parsed diff to a document (BSON bytes; a zero-length array means the empty
 * document) and returns the new document's BSON bytes. Throws FAILED_PRECONDITION when the
 * diff cannot apply to this document, naming the path and what is there, and
 * RESOURCE_EXHAUSTED when the result would exceed maxDocumentBytes. Never mutates its inputs.
 */
export function applyDiff(document: Uint8Array, diff: ParsedDiff): Uint8Array {
  const src = document.length === 0 ? EMPTY_DOCUMENT : document;
  const root = open({ kind: "raw", type: T.document, src, start: 0, end: src.length }, "document") as Doc;
  for (const op of diff.ops) applyOp(root, op, diff);
  const size = sizeOf(root);
  if (size > DIFF_LIMITS.maxDocumentBytes) {
    throw new QuantixError(
      "resource_exhausted",
      `the document would be ${size} bytes after the diff, over the limit of ${DIFF_LIMITS.maxDocumentBytes} bytes (128 MiB)`,
    );
  }
  // A plain Uint8Array of its own memory (not a slice of Node's shared Buffer pool), so a
  // caller may keep it or its .buffer; written through a Buffer view for UTF-8 names.
  const out = new Uint8Array(size);
  const end = write(Buffer.from(out.buffer, 0, size), 0, root);
  if (end !== size) throw new Error(`internal: wrote ${end} of ${size} bytes`);
  return out;
}

function applyOp(root: Doc, op: DiffOp, diff: ParsedDiff): void {
  const creates = op.op === "$set" || op.op === "$inc" || op.op === "$push";
  const parent = walk(root, op, diff, creates);
  if (!parent) return;
  const last = op.segments[op.segments.length - 1]!;
  const current = child(parent, last);
  switch (op.op) {
    case "$set":
      return put(parent, last, op.value, op, diff);
    case "$unset":
      if (parent.kind === "doc") {
        const i = fieldIndex(parent, last);
        if (i !== undefined) {
          parent.index?.delete(last);
          parent.values[i] = undefined;
        }
      } else if (current !== undefined) {
        parent.items[Number(last)] = NULL; // MongoDB: an unset array element becomes null
      }
      return;
    case "$inc": {
      if (current === undefined) return put(parent, last, encodeNumber(op.amount), op, diff);
      const n = current.kind === "raw" ? readNumber(current) : undefined;
      if (!n) throw cannot(diff, op, `$inc needs a number there, found ${describe(current)}`);
      const sum = addNumbers(n, op.amount);
      if (!sum) throw cannot(diff, op, `$inc of ${op.amount.value} on the int64 ${n.value} would overflow int64`);
      return put(parent, last, encodeNumber(sum), op, diff);
    }
    case "$push": {
      if (current === undefined) return put(parent, last, { kind: "arr", items: [...op.values] }, op, diff);
      const arr = current.kind === "raw" && current.type === T.array ? open(current, op.path) : current;
      if (arr.kind !== "arr") throw cannot(diff, op, `$push needs an array there, found ${describe(current)}`);
      for (const item of op.values) arr.items.push(item); // not push(...): $each may hold millions
      return put(parent, last, arr, op, diff);
    }
    case "$pop": {
      if (current === undefined) return;
      const arr = current.kind === "raw" && current.type === T.array ? open(current, op.path) : current;
      if (arr.kind !== "arr") throw cannot(diff, op, `$pop needs an array there, found ${describe(current)}`);
      if (op.first) arr.items.shift();
      else arr.items.pop();
      return put(parent, last, arr, op, diff);
    }
    default: {
      const never: never = op;
      throw new Error(`unhandled operator ${String(never)}`);
    }
  }
}

/**
 * The container holding the path's last segment, opening (and, when `create`, adding)
 * the documents and arrays on the way; undefined when a non-creating operator finds the
 * path missing (a no-op).
 */
function walk(root: Doc, op: DiffOp, diff: ParsedDiff, create: boolean): Container | undefined {
  let at: Container = root;
  for (let i = 0; i < op.segments.length - 1; i++) {
    const seg = op.segments[i]!;
    let next = child(at, seg);
    if (next === undefined || (next.kind === "raw" && next.type === T.null && create)) {
      if (!create) return undefined;
      if (next !== undefined) throw cannot(diff, op, `cannot create field '${op.segments[i + 1]}' in '${prefix(op, i + 1)}': it is null`);
      if (at.kind === "arr" && !NUMERIC_SEGMENT.test(seg)) {
        throw cannot(diff, op, `cannot create field '${seg}' in '${prefix(op, i)}': it is an array (use a numeric index)`);
      }
      next = newDoc();
      put(at, seg, next, op, diff);
    } else if (next.kind === "raw" && (next.type === T.document || next.type === T.array)) {
      next = open(next, op.path);
      put(at, seg, next, op, diff);
    } else if (next.kind === "raw") {
      if (!create) return undefined;
      throw cannot(diff, op, `cannot create field '${op.segments[i + 1]}' in '${prefix(op, i + 1)}': it is ${typeName(next.type)}, not a document or array`);
    }
    at = next;
  }
  const last = op.segments[op.segments.length - 1]!;
  if (at.kind === "arr" && !NUMERIC_SEGMENT.test(last)) {
    if (!create) return undefined;
    const where = op.segments.slice(0, -1).join(".");
    throw cannot(diff, op, `cannot create field '${last}' in '${where}': it is an array (use a numeric index)`);
  }
  return at;
}

/** The path's first n segments, for messages. */
const prefix = (op: DiffOp, n: number) => op.segments.slice(0, n).join(".");

function child(c: Container, seg: string): Value | undefined {
  if (c.kind === "doc") {
    const i = fieldIndex(c, seg);
    return i === undefined ? undefined : c.values[i];
  }
  return NUMERIC_SEGMENT.test(seg) ? c.items[Number(seg)] : undefined;
}

/** Sets a field, or an array element (padding with nulls up to maxArrayIndex). */
function put(c: Container, seg: string, value: Value, op: DiffOp, diff: ParsedDiff): void {
  if (c.kind === "doc") return setField(c, seg, value);
  const i = Number(seg);
  if (i > DIFF_LIMITS.maxArrayIndex) throw cannot(diff, op, `array index ${seg} is over the limit of ${DIFF_LIMITS.maxArrayIndex}`);
  while (c.items.length < i) c.items.push(NULL);
  c.items[i] = value;
}

// ---- $inc arithmetic (MongoDB's rules) ----

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * MongoDB's SafeNum rules: int32 + int32 is int32, or int64 when it overflows; int64 with
 * int32 or int64 is int64, and undefined when that overflows (MongoDB fails the update);
 * anything with a double is a double.
 */
function addNumbers(a: IncAmount, b: IncAmount): IncAmount | undefined {
  if (a.type === T.double || b.type === T.double) return { type: T.double, value: Number(a.value) + Number(b.value) };
  if (a.type === T.int32 && b.type === T.int32) {
    const sum = a.value + b.value;
    return sum >= INT32_MIN && sum <= INT32_MAX ? { type: T.int32, value: sum } : { type: T.int64, value: BigInt(sum) };
  }
  const sum = BigInt(a.value) + BigInt(b.value);
  return sum >= INT64_MIN && sum <= INT64_MAX ? { type: T.int64, value: sum } : undefined;
}

function encodeNumber(n: IncAmount): RawValue {
  const bytes = new Uint8Array(n.type === T.int32 ? 4 : 8);
  const view = new DataView(bytes.buffer);
  if (n.type === T.int64) view.setBigInt64(0, n.value, true);
  else if (n.type === T.int32) view.setInt32(0, n.value, true);
  else view.setFloat64(0, n.value, true);
  return { kind: "raw", type: n.type, src: bytes, start: 0, end: bytes.length };
}

// ---- writing ----

function sizeOf(v: Value): number {
  if (v.kind === "raw") return v.end - v.start;
  let size = 5;
  if (v.kind === "arr") {
    v.items.forEach((item, i) => (size += 2 + String(i).length + sizeOf(item)));
  } else {
    v.values.forEach((item, i) => {
      if (item !== undefined) size += 2 + Buffer.byteLength(v.names[i]!, "utf8") + sizeOf(item);
    });
  }
  return size;
}

function typeOf(v: Value): number {
  return v.kind === "raw" ? v.type : v.kind === "doc" ? T.document : T.array;
}

/** Writes a value's bytes at offset; returns the offset after them. */
function write(out: Buffer, offset: number, v: Value): number {
  if (v.kind === "raw") {
    const { src, start, end } = v;
    if (end - start > 16) {
      out.set(src.subarray(start, end), offset);
      return offset + end - start;
    }
    for (let k = start; k < end; k++) out[offset++] = src[k]!; // for a few bytes a view costs more than the copy
    return offset;
  }
  const start = offset;
  offset += 4;
  if (v.kind === "arr") {
    for (let i = 0; i < v.items.length; i++) offset = writeElement(out, offset, String(i), v.items[i]!);
  } else {
    for (let i = 0; i < v.names.length; i++) {
      const item = v.values[i];
      if (item !== undefined) offset = writeElement(out, offset, v.names[i]!, item);
    }
  }
  out[offset++] = 0;
  out.writeInt32LE(offset - start, start);
  return offset;
}

function writeElement(out: Buffer, offset: number, name: string, item: Value): number {
  out[offset++] = typeOf(item);
  offset = writeName(out, offset, name);
  out[offset++] = 0;
  return write(out, offset, item);
}

/** Writes a field name, ASCII byte by byte (most names: cheaper than a UTF-8 encoder call). */
function writeName(out: Buffer, offset: number, name: string): number {
  for (let k = 0; k < name.length; k++) {
    const c = name.charCodeAt(k);
    if (c >= 0x80) return offset - k + out.write(name, offset - k, "utf8");
    out[offset++] = c;
  }
  return offset;
}
