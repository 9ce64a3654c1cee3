import { create, fromBinary, ScalarType, type DescField, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { planner, unboxed, wireType } from "./message-plans.js";

/**
 * A binary decoder for protobuf-es v2 messages that returns what protobuf-es's `fromBinary`
 * returns, without its reflection objects: each message type's fields are read once into a
 * plan (by field number), and a message is read in one pass into a copy of its zero value.
 * See ADR 0014's addendum: decoding the requests, the agents' answers and the stored rows
 * was the largest part of the control plane's warm path left to protobuf-es.
 *
 * It reads the common case and nothing else: input it is not sure to read as fromBinary
 * does (an unknown field, a wire type other than the field's, a cut or overlong value,
 * invalid UTF-8 in a checked string, a map entry with other fields) is handed to fromBinary,
 * which reads it or throws its own error. Message types whose fields protobuf-es represents
 * other than as plain fields (wrappers, Struct, 64-bit integers as strings, proto2 groups,
 * closed enums, maps with keys other than strings, defaults on a prototype) are always
 * read by fromBinary.
 */
export function decodeBinary<Desc extends DescMessage>(schema: Desc, bytes: Uint8Array): MessageShape<Desc> {
  return (planDecode(schema, bytes) as MessageShape<Desc> | undefined) ?? fromBinary(schema, bytes);
}

/**
 * The message read by the plan, or undefined when the plan does not read this type or these
 * bytes (fromBinary's case): for a caller whose fallback is not fromBinary itself (the
 * Connect path hands the rest to connect-es's serialization, for its errors), and for tests.
 */
export function planDecode(schema: DescMessage, bytes: Uint8Array): object | undefined {
  const plan = planOf(schema);
  if (plan === undefined) return undefined;
  buf = bytes;
  pos = 0;
  depth = 0;
  try {
    return readMessage(plan, bytes.length, undefined);
  } catch (e) {
    if (e === BAIL) return undefined;
    throw e;
  } finally {
    // Holds no caller's bytes once done.
    buf = EMPTY;
    view = undefined;
    asBuffer = undefined;
  }
}

/**
 * How a field holds its value. Each of the encoder and the decoder declares its own: a
 * const enum of the same file is inlined as numbers where the build compiles file by file
 * (esbuild), one imported is read as an object's properties on every field.
 */
const enum Kind {
  Scalar,
  Message,
  List,
  ListMessage,
  Map,
}

/** fromBinary's default limit on nested messages. */
const RECURSION_LIMIT = 100;

interface FieldPlan {
  readonly name: string;
  /** The oneof's property, when the field is a member of one. */
  readonly oneof: string | undefined;
  readonly kind: Kind;
  /** Scalar type of the value (enums: INT32); of list items; of map values. */
  readonly scalar: ScalarType;
  /** The wire type the field's value (a list's unpacked item, a map's value) is written with. */
  readonly wire: number;
  /** Strings: invalid UTF-8 is an error (fromBinary's utf8Validation) rather than U+FFFD. */
  readonly strict: boolean;
  /** Map values: a message (else a scalar or enum, in `scalar`). */
  readonly mapMessage: boolean;
  /** A map's value when its entry has none (scalars and enums). */
  readonly mapZero: unknown;
  sub: Plan | undefined;
  readonly subDesc: DescMessage | undefined;
}

interface Plan {
  /** create(desc): every implicit field at its zero; its containers are replaced per message. */
  readonly zero: Readonly<Record<string, unknown>>;
  /** By field number. */
  readonly byNumber: readonly (FieldPlan | undefined)[];
  readonly lists: readonly string[];
  readonly maps: readonly string[];
  readonly oneofs: readonly string[];
}

/** Field numbers above this are read by fromBinary (the plan indexes fields by number). */
const MAX_PLANNED_NUMBER = 1024;

const planOf = planner<Plan>(
  (desc) => {
    const zero = createZero(desc);
    return zero && { zero, byNumber: [], lists: [], maps: [], oneofs: desc.oneofs.map((o) => o.localName) };
  },
  (desc, plan, sub) => {
    for (const f of desc.fields) {
      const fp = planField(f);
      if (!fp || f.number > MAX_PLANNED_NUMBER) return false;
      if (fp.subDesc) {
        fp.sub = sub(fp.subDesc);
        if (!fp.sub) return false;
      }
      (plan.byNumber as (FieldPlan | undefined)[])[f.number] = fp;
      if (fp.oneof === undefined && (fp.kind === Kind.List || fp.kind === Kind.ListMessage)) (plan.lists as string[]).push(fp.name);
      if (fp.kind === Kind.Map) (plan.maps as string[]).push(fp.name);
    }
    return true;
  },
);

/** protobuf-es's zero message, or undefined for a type that keeps its defaults on a prototype (proto2), which a copy would lose. */
function createZero(desc: DescMessage): Record<string, unknown> | undefined {
  const zero = create(desc) as unknown as Record<string, unknown>;
  return Object.getPrototypeOf(zero) === Object.prototype ? zero : undefined;
}

function planField(f: DescField): FieldPlan | undefined {
  if (("delimitedEncoding" in f && f.delimitedEncoding) || ("longAsString" in f && f.longAsString)) return undefined;
  const base = { name: f.localName, oneof: f.oneof?.localName, strict: "utf8Validation" in f && f.utf8Validation, sub: undefined, mapMessage: false, mapZero: undefined };
  switch (f.fieldKind) {
    case "scalar":
      return { ...base, kind: Kind.Scalar, scalar: f.scalar, wire: wireType(f.scalar), subDesc: undefined };
    case "enum":
      if (!f.enum.open) return undefined;
      return { ...base, kind: Kind.Scalar, scalar: ScalarType.INT32, wire: 0, subDesc: undefined };
    case "message":
      if (unboxed(f.message)) return undefined;
      return { ...base, kind: Kind.Message, scalar: ScalarType.INT32, wire: 2, subDesc: f.message };
    case "list":
      if (f.listKind === "message") {
        if (unboxed(f.message)) return undefined;
        return { ...base, kind: Kind.ListMessage, scalar: ScalarType.INT32, wire: 2, subDesc: f.message };
      }
      if (f.listKind === "enum" && !f.enum.open) return undefined;
      {
        const scalar = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
        return { ...base, kind: Kind.List, scalar, wire: wireType(scalar), subDesc: undefined };
      }
    case "map":
      if (f.mapKey !== ScalarType.STRING) return undefined;
      if (f.mapKind === "message") {
        if (unboxed(f.message)) return undefined;
        return { ...base, kind: Kind.Map, scalar: ScalarType.INT32, wire: 2, mapMessage: true, subDesc: f.message };
      }
      if (f.mapKind === "enum") {
        if (!f.enum.open) return undefined;
        return { ...base, kind: Kind.Map, scalar: ScalarType.INT32, wire: 0, mapZero: f.enum.values[0]!.number, subDesc: undefined };
      }
      return { ...base, kind: Kind.Map, scalar: f.scalar, wire: wireType(f.scalar), mapZero: scalarZero(f.scalar), subDesc: undefined };
  }
}

/** fromBinary's value for a map entry without one (a new empty array for bytes). */
function scalarZero(t: ScalarType): unknown {
  switch (t) {
    case ScalarType.STRING:
      return "";
    case ScalarType.BOOL:
      return false;
    case ScalarType.BYTES:
      return BYTES_ZERO;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 0n;
    default:
      return 0;
  }
}
const BYTES_ZERO = Symbol("bytes zero");

/** Thrown (never escaping planDecode) when fromBinary must read the bytes. */
const BAIL = Symbol("bail");
const EMPTY = new Uint8Array(0);

// The decode in progress: decoding is synchronous and never re-entered.
let buf: Uint8Array = EMPTY;
let pos = 0;
let depth = 0;
let view: DataView | undefined;
/** The bytes as a Buffer (the same memory), for its UTF-8 decoder. */
let asBuffer: Buffer | undefined;

const utf8 = new TextDecoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });
/** 64-bit integers from two 32-bit halves, as protobuf-es makes them. */
const int64View = new DataView(new ArrayBuffer(8));

function readMessage(plan: Plan, end: number, into: Record<string, unknown> | undefined): Record<string, unknown> {
  if (++depth > RECURSION_LIMIT) throw BAIL;
  const m = into ?? fresh(plan);
  const byNumber = plan.byNumber;
  while (pos < end) {
    const tag = readTag();
    const f = byNumber[tag >>> 3];
    if (f === undefined) throw BAIL;
    const wire = tag & 7;
    switch (f.kind) {
      case Kind.Scalar: {
        if (wire !== f.wire) throw BAIL;
        const v = readScalar(f.scalar, f.strict);
        if (f.oneof === undefined) m[f.name] = v;
        else m[f.oneof] = { case: f.name, value: v };
        break;
      }
      case Kind.Message: {
        if (wire !== 2) throw BAIL;
        const stop = readLength();
        if (f.oneof === undefined) {
          m[f.name] = readMessage(f.sub!, stop, m[f.name] as Record<string, unknown> | undefined);
        } else {
          const current = m[f.oneof] as { case: string | undefined; value?: Record<string, unknown> };
          m[f.oneof] = { case: f.name, value: readMessage(f.sub!, stop, current.case === f.name ? current.value : undefined) };
        }
        break;
      }
      case Kind.ListMessage: {
        if (wire !== 2) throw BAIL;
        const stop = readLength();
        (m[f.name] as unknown[]).push(readMessage(f.sub!, stop, undefined));
        break;
      }
      case Kind.List: {
        const list = m[f.name] as unknown[];
        if (wire === 2 && f.wire !== 2) {
          const stop = readLength();
          while (pos < stop) list.push(readScalar(f.scalar, f.strict));
          if (pos !== stop) throw BAIL;
        } else {
          if (wire !== f.wire) throw BAIL;
          list.push(readScalar(f.scalar, f.strict));
        }
        break;
      }
      case Kind.Map: {
        if (wire !== 2) throw BAIL;
        readMapEntry(f, m[f.name] as Record<string, unknown>, readLength());
        break;
      }
    }
  }
  if (pos !== end) throw BAIL;
  depth--;
  return m;
}

/** A new message of the plan's type: its zero, with containers of its own. */
function fresh(plan: Plan): Record<string, unknown> {
  const m = { ...plan.zero };
  for (const n of plan.lists) m[n] = [];
  for (const n of plan.maps) m[n] = {};
  for (const n of plan.oneofs) m[n] = { case: undefined };
  return m;
}

function readMapEntry(f: FieldPlan, map: Record<string, unknown>, end: number): void {
  let key = "";
  let value: unknown;
  let hasValue = false;
  while (pos < end) {
    const tag = readTag();
    if (tag === 10) {
      key = readString(f.strict);
    } else if (tag >>> 3 === 2 && (tag & 7) === f.wire) {
      value = f.mapMessage ? readMessage(f.sub!, readLength(), undefined) : readScalar(f.scalar, f.strict);
      hasValue = true;
    } else {
      throw BAIL;
    }
  }
  if (pos !== end || key === "__proto__") throw BAIL;
  if (!hasValue) value = f.mapMessage ? fresh(f.sub!) : f.mapZero === BYTES_ZERO ? new Uint8Array(0) : f.mapZero;
  map[key] = value;
}

/** A length-delimited value's length, as the position where it ends. */
function readLength(): number {
  const len = readVarint32();
  const stop = pos + len;
  if (stop > buf.length) throw BAIL;
  return stop;
}

/** A tag, as fromBinary accepts it: at most five bytes, a field number, a wire type up to 5. */
function readTag(): number {
  const start = pos;
  const tag = readVarint32();
  const read = pos - start;
  if (read > 5 || (read === 5 && buf[pos - 1]! > 0x0f)) throw BAIL;
  if (tag >>> 3 === 0 || (tag & 7) > 5) throw BAIL;
  return tag;
}

/** protobuf-es's varint32read: up to ten bytes, the low 32 bits kept. */
function readVarint32(): number {
  const b = buf;
  const len = b.length;
  let p = pos;
  if (p >= len) throw BAIL;
  let x = b[p++]!;
  let result = x & 0x7f;
  if (x < 0x80) {
    pos = p;
    return result;
  }
  for (let shift = 7; shift < 28; shift += 7) {
    if (p >= len) throw BAIL;
    x = b[p++]!;
    result |= (x & 0x7f) << shift;
    if (x < 0x80) {
      pos = p;
      return result;
    }
  }
  if (p >= len) throw BAIL;
  x = b[p++]!;
  result |= (x & 0x0f) << 28;
  for (let read = 5; x >= 0x80 && read < 10; read++) {
    if (p >= len) throw BAIL;
    x = b[p++]!;
  }
  if (x >= 0x80) throw BAIL;
  pos = p;
  return result >>> 0;
}

// protobuf-es's varint64read's two halves.
let lo = 0;
let hi = 0;

function readVarint64(): void {
  const b = buf;
  const len = b.length;
  let p = pos;
  let low = 0;
  let high = 0;
  let x = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (p >= len) throw BAIL;
    x = b[p++]!;
    low |= (x & 0x7f) << shift;
    if (x < 0x80) {
      pos = p;
      lo = low;
      hi = 0;
      return;
    }
  }
  if (p >= len) throw BAIL;
  x = b[p++]!;
  low |= (x & 0x0f) << 28;
  high = (x & 0x70) >> 4;
  if (x < 0x80) {
    pos = p;
    lo = low;
    hi = high;
    return;
  }
  for (let shift = 3; shift <= 31; shift += 7) {
    if (p >= len) throw BAIL;
    x = b[p++]!;
    high |= (x & 0x7f) << shift;
    if (x < 0x80) {
      pos = p;
      lo = low;
      hi = high;
      return;
    }
  }
  throw BAIL;
}

function int64(signed: boolean): bigint {
  if (hi === 0 && lo >= 0) return BigInt(lo);
  int64View.setInt32(0, lo, true);
  int64View.setInt32(4, hi, true);
  return signed ? int64View.getBigInt64(0, true) : int64View.getBigUint64(0, true);
}

function fixed(size: number): DataView {
  if (pos + size > buf.length) throw BAIL;
  return (view ??= new DataView(buf.buffer, buf.byteOffset, buf.byteLength));
}

function readString(strict: boolean): string {
  const stop = readLength();
  const start = pos;
  pos = stop;
  const b = buf;
  // Short ASCII strings (the common case) a character at a time, without a decoder's call.
  if (stop - start <= 16) {
    let s = "";
    for (let i = start; i < stop; i++) {
      const c = b[i]!;
      if (c >= 0x80) return decodeUtf8(start, stop, strict);
      s += String.fromCharCode(c);
    }
    return s;
  }
  // Longer ones by Buffer's UTF-8 decoder, which reads valid UTF-8 as TextDecoder does. What
  // it cannot vouch for goes to TextDecoder, as fromBinary decodes it: a U+FFFD (invalid
  // input, replaced; or one that was written) and a leading BOM (which TextDecoder drops).
  const s = (asBuffer ??= Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)).toString("utf8", start, stop);
  return s.charCodeAt(0) === 0xfeff || s.includes("\ufffd") ? decodeUtf8(start, stop, strict) : s;
}

function decodeUtf8(start: number, stop: number, strict: boolean): string {
  const bytes = buf.subarray(start, stop);
  if (!strict) return utf8.decode(bytes);
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw BAIL;
  }
}

function readScalar(t: ScalarType, strict: boolean): unknown {
  switch (t) {
    case ScalarType.STRING:
      return readString(strict);
    case ScalarType.INT32:
      return readVarint32() | 0;
    case ScalarType.UINT32:
      return readVarint32();
    case ScalarType.SINT32: {
      const z = readVarint32();
      return (z >>> 1) ^ -(z & 1);
    }
    case ScalarType.BOOL:
      readVarint64();
      return lo !== 0 || hi !== 0;
    case ScalarType.INT64:
      readVarint64();
      return int64(true);
    case ScalarType.UINT64:
      readVarint64();
      return int64(false);
    case ScalarType.SINT64: {
      readVarint64();
      const s = -(lo & 1);
      const l = ((lo >>> 1) | ((hi & 1) << 31)) ^ s;
      hi = (hi >>> 1) ^ s;
      lo = l;
      return int64(true);
    }
    case ScalarType.BYTES: {
      const stop = readLength();
      const start = pos;
      pos = stop;
      return buf.subarray(start, stop);
    }
    case ScalarType.DOUBLE: {
      const v = fixed(8).getFloat64(pos, true);
      pos += 8;
      return v;
    }
    case ScalarType.FLOAT: {
      const v = fixed(4).getFloat32(pos, true);
      pos += 4;
      return v;
    }
    case ScalarType.FIXED32: {
      const v = fixed(4).getUint32(pos, true);
      pos += 4;
      return v;
    }
    case ScalarType.SFIXED32: {
      const v = fixed(4).getInt32(pos, true);
      pos += 4;
      return v;
    }
    case ScalarType.FIXED64:
      return readFixed64(false);
    case ScalarType.SFIXED64:
      return readFixed64(true);
  }
  throw BAIL;
}

/** A fixed64 or sfixed64, as protobuf-es reads it: two little-endian 32-bit halves. */
function readFixed64(signed: boolean): bigint {
  const d = fixed(8);
  lo = d.getInt32(pos, true);
  hi = d.getInt32(pos + 4, true);
  pos += 8;
  return int64(signed);
}
