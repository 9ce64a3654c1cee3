import { clearField, clone, protoInt64, ScalarType, toBinary, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { FLOAT32_MAX, INT32_MAX, INT32_MIN, UINT32_MAX } from "@bufbuild/protobuf/wire";
import { planner, unboxed, wireType } from "./message-plans.js";

/**
 * A binary encoder for protobuf-es v2 messages that checks every field as protobuf-es's
 * `clone` does (each value of its field's type, integers in range, strings without lone
 * surrogates) and writes the bytes `toBinary` writes, in one pass that sizes and checks and
 * one that writes into a buffer of the exact size. Each message type's fields are read once
 * into a plan; no reflection objects are made per call. See ADR 0014: a stored object was
 * checked by a clone and encoded by toBinary on every write, and in the server those two
 * cost about a tenth of a CreateVM's CPU.
 *
 * Message types whose fields protobuf-es represents other than as plain fields (the
 * wrappers and Struct, which it unboxes; proto2 groups and required fields; maps with keys
 * other than strings) are encoded by protobuf-es itself, after its checked clone.
 */
export function encodeChecked(schema: DescMessage, message: object, omit?: string): Uint8Array {
  const plan = planOf(schema);
  if (!plan) return fallback(schema, message, omit);
  // One array of lengths and one of set fields for every call: encoding is synchronous and never re-entered.
  LENS.length = 0;
  OPS.length = 0;
  try {
    const size = sizeMessage(plan, message as Obj, LENS, omit);
    const w = new Writer(size, LENS);
    writeOps(w);
    return w.buf;
  } finally {
    // Holds no message once done (or refused).
    OPS.length = 0;
  }
}

/**
 * Checks a message as encodeChecked does (each value of its field's type, integers in
 * range, strings without lone surrogates), encoding nothing: MessageCheckError names the
 * field that is wrong. Types encodeChecked leaves to protobuf-es are checked by its clone.
 */
export function checkMessage(schema: DescMessage, message: object): void {
  const plan = planOf(schema);
  if (!plan) {
    clone(schema, message as never);
    return;
  }
  LENS.length = 0;
  OPS.length = 0;
  try {
    sizeMessage(plan, message as Obj, LENS, undefined);
  } finally {
    OPS.length = 0;
  }
}

/** encodeFrozen's bytes, by the frozen message they encode. */
const frozenBytes = new WeakMap<object, Uint8Array>();

/**
 * encodeChecked's bytes of a deeply frozen message (a stored object), made once per object:
 * it never changes, so the store that writes it, the answer that returns it and the watch
 * events that carry it share one encoding. Every field is encoded, resource_version too.
 */
export function encodeFrozen(schema: DescMessage, message: object): Uint8Array {
  let bytes = frozenBytes.get(message);
  if (bytes === undefined) {
    bytes = encodeChecked(schema, message);
    frozenBytes.set(message, bytes);
  }
  return bytes;
}

/** The lengths the size pass records for the write pass (encodeChecked). */
const LENS: number[] = [];
/**
 * The size pass's set fields in the order they are written, each as its plan and value
 * (so that the write pass reads no message again): a message's fields are followed by
 * END; its unknown fields are one UNKNOWN entry.
 */
const OPS: unknown[] = [];
const END = Symbol("end");
const UNKNOWN = Symbol("unknown");

/** A field value that is not what its field holds. */
export class MessageCheckError extends Error {
  override readonly name = "MessageCheckError";
}

type Obj = Record<string, unknown> & { $typeName?: string; $unknown?: readonly { no: number; wireType: number; data: Uint8Array }[] };

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

/** What protobuf-es 2 calls FeatureSet.FieldPresence.IMPLICIT. */
const IMPLICIT = 2;
/** FeatureSet.FieldPresence.LEGACY_REQUIRED. */
const LEGACY_REQUIRED = 3;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;

interface FieldPlan {
  readonly name: string;
  /** The oneof's property, when the field is a member of one. */
  readonly oneof: string | undefined;
  readonly explicit: boolean;
  readonly kind: Kind;
  /** Scalar type of the value (enums: INT32); of list items; of map values. */
  readonly scalar: ScalarType;
  readonly isEnum: boolean;
  /** The zero value an implicit-presence enum field leaves out. */
  readonly enumZero: number;
  /** Closed enum: the values it accepts. */
  readonly closed: ReadonlySet<number> | undefined;
  /** The tag's varint value: (number << 3) | wire type. */
  readonly tag: number;
  readonly packed: boolean;
  /** Map values: a message (else a scalar or enum, in `scalar`). */
  readonly mapMessage: boolean;
  readonly label: string;
  sub: Plan | undefined;
  readonly subDesc: DescMessage | undefined;
}

interface Plan {
  readonly typeName: string;
  readonly fields: readonly FieldPlan[];
}

const planOf = planner<Plan>(
  (desc) => ({ typeName: desc.typeName, fields: [] }),
  (desc, plan, sub) => {
    for (const f of [...desc.fields].sort((x, y) => x.number - y.number)) {
      const fp = planField(f);
      if (!fp) return false;
      if (fp.subDesc) {
        fp.sub = sub(fp.subDesc);
        if (!fp.sub) return false;
      }
      (plan.fields as FieldPlan[]).push(fp);
    }
    return true;
  },
);

function planField(f: DescField): FieldPlan | undefined {
  if (f.presence === LEGACY_REQUIRED || ("delimitedEncoding" in f && f.delimitedEncoding)) return undefined;
  const base = { name: f.localName, oneof: f.oneof?.localName, explicit: f.presence !== IMPLICIT, label: `${f.parent.typeName}.${f.name}`, sub: undefined };
  const enumInfo = (e: DescField["enum"]) => ({ isEnum: e !== undefined, enumZero: e?.values[0]?.number ?? 0, closed: e && !e.open ? new Set(e.values.map((v) => v.number)) : undefined });
  switch (f.fieldKind) {
    case "scalar":
      return { ...base, kind: Kind.Scalar, scalar: f.scalar, ...enumInfo(undefined), tag: f.number * 8 + wireType(f.scalar), packed: false, mapMessage: false, subDesc: undefined };
    case "enum":
      return { ...base, kind: Kind.Scalar, scalar: ScalarType.INT32, ...enumInfo(f.enum), tag: f.number * 8, packed: false, mapMessage: false, subDesc: undefined };
    case "message":
      if (unboxed(f.message)) return undefined;
      return { ...base, kind: Kind.Message, scalar: ScalarType.INT32, ...enumInfo(undefined), tag: f.number * 8 + 2, packed: false, mapMessage: false, subDesc: f.message };
    case "list":
      if (f.listKind === "message") return { ...base, kind: Kind.ListMessage, scalar: ScalarType.INT32, ...enumInfo(undefined), tag: f.number * 8 + 2, packed: false, mapMessage: false, subDesc: f.message };
      {
        const scalar = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
        return { ...base, kind: Kind.List, scalar, ...enumInfo(f.listKind === "enum" ? f.enum : undefined), tag: f.number * 8 + (f.packed ? 2 : wireType(scalar)), packed: f.packed, mapMessage: false, subDesc: undefined };
      }
    case "map":
      if (f.mapKey !== ScalarType.STRING) return undefined;
      if (f.mapKind === "message") {
        if (unboxed(f.message)) return undefined;
        return { ...base, kind: Kind.Map, scalar: ScalarType.INT32, ...enumInfo(undefined), tag: f.number * 8 + 2, packed: false, mapMessage: true, subDesc: f.message };
      }
      return { ...base, kind: Kind.Map, scalar: f.mapKind === "enum" ? ScalarType.INT32 : f.scalar, ...enumInfo(f.mapKind === "enum" ? f.enum : undefined), tag: f.number * 8 + 2, packed: false, mapMessage: false, subDesc: undefined };
  }
}

/** The unset marker valueOf returns. */
const UNSET = Symbol("unset");

/** The field's value when it is set (as protobuf-es's isSet decides), else UNSET. */
function valueOf(fp: FieldPlan, m: Obj): unknown {
  if (fp.oneof !== undefined) {
    const o = m[fp.oneof] as { case?: string; value?: unknown } | undefined;
    if (o === undefined || o === null || typeof o !== "object") throw new MessageCheckError(`invalid ${fp.label}: its oneof '${fp.oneof}' is ${String(o)}, not an object`);
    return o.case === fp.name ? o.value : UNSET;
  }
  const v = m[fp.name];
  if (fp.explicit) return v !== undefined && Object.prototype.hasOwnProperty.call(m, fp.name) ? v : UNSET;
  switch (fp.kind) {
    case Kind.List:
    case Kind.ListMessage:
      if (!Array.isArray(v)) throw bad(fp, "a list", v);
      return v.length > 0 ? v : UNSET;
    case Kind.Map:
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad(fp, "a map (an object)", v);
      for (const _ in v) return v;
      return UNSET;
    case Kind.Scalar:
      if (fp.isEnum) return v === fp.enumZero ? UNSET : v;
      return isZero(fp.scalar, v) ? UNSET : v;
    default:
      // A message field always has explicit presence.
      return v === undefined ? UNSET : v;
  }
}

function isZero(t: ScalarType, v: unknown): boolean {
  switch (t) {
    case ScalarType.BOOL:
      return v === false;
    case ScalarType.STRING:
      return v === "";
    case ScalarType.BYTES:
      return v instanceof Uint8Array && v.byteLength === 0;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return Object.is(v, 0);
    default:
      // As protobuf-es: 0, 0n and "0" are the zero value.
      return v == 0; // eslint-disable-line eqeqeq
  }
}

function bad(fp: FieldPlan, expected: string, v: unknown, detail?: string): MessageCheckError {
  return new MessageCheckError(`invalid ${fp.label}: expected ${expected}, got ${detail ?? describe(v)}`);
}

function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === "bigint") return `${v}n`;
  if (v instanceof Uint8Array) return `${v.byteLength} bytes`;
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  if (typeof v === "object") return `an object${(v as Obj).$typeName ? ` of ${(v as Obj).$typeName}` : ""}`;
  return String(v);
}

// ---- size pass: checks every value and records the length of each length-delimited part, in order

function sizeMessage(p: Plan, m: Obj, lens: number[], omit: string | undefined): number {
  if (typeof m !== "object" || m === null) throw new MessageCheckError(`invalid message: expected ${p.typeName}, got ${describe(m)}`);
  if (m.$typeName !== undefined && m.$typeName !== p.typeName) throw new MessageCheckError(`invalid message: expected ${p.typeName}, got ${m.$typeName}`);
  let n = 0;
  for (const fp of p.fields) {
    if (fp.name === omit) continue;
    const v = valueOf(fp, m);
    if (v === UNSET) continue;
    OPS.push(fp, v);
    n += sizeField(fp, v, lens);
  }
  const unknown = m.$unknown;
  if (unknown && unknown.length > 0) {
    OPS.push(UNKNOWN, unknown);
    for (const u of unknown) n += varintSize((u.no << 3) | u.wireType) + u.data.byteLength;
  }
  OPS.push(END, undefined);
  return n;
}

function sizeField(fp: FieldPlan, v: unknown, lens: number[]): number {
  const tagSize = varintSize(fp.tag);
  switch (fp.kind) {
    case Kind.Scalar:
      return tagSize + sizeScalar(fp, fp.scalar, v, lens);
    case Kind.Message:
      return tagSize + sizeSub(fp, v, lens);
    case Kind.ListMessage: {
      let n = 0;
      for (const item of v as unknown[]) n += tagSize + sizeSub(fp, item, lens);
      return n;
    }
    case Kind.List: {
      const list = v as unknown[];
      if (!fp.packed) {
        let n = 0;
        for (const item of list) n += tagSize + sizeScalar(fp, fp.scalar, item, lens);
        return n;
      }
      const at = lens.push(0) - 1;
      let payload = 0;
      for (const item of list) payload += sizeScalar(fp, fp.scalar, item, lens);
      lens[at] = payload;
      return tagSize + varintSize(payload) + payload;
    }
    case Kind.Map: {
      const map = v as Record<string, unknown>;
      let n = 0;
      for (const key in map) {
        const at = lens.push(0) - 1;
        const keySize = 1 + sizeString(fp, key, lens);
        const value = map[key];
        const valueSize = 1 + (fp.mapMessage ? sizeSub(fp, value, lens) : sizeScalar(fp, fp.scalar, value, lens));
        lens[at] = keySize + valueSize;
        n += tagSize + varintSize(keySize + valueSize) + keySize + valueSize;
      }
      return n;
    }
  }
}

/** A length-delimited message's size with its length prefix. */
function sizeSub(fp: FieldPlan, v: unknown, lens: number[]): number {
  if (typeof v !== "object" || v === null) throw bad(fp, fp.sub!.typeName, v);
  const at = lens.push(0) - 1;
  const n = sizeMessage(fp.sub!, v as Obj, lens, undefined);
  lens[at] = n;
  return varintSize(n) + n;
}

/** A scalar's encoded size (strings and bytes with their length prefix), after checking it. */
function sizeScalar(fp: FieldPlan, t: ScalarType, v: unknown, lens: number[]): number {
  switch (t) {
    case ScalarType.STRING:
      return sizeString(fp, v, lens);
    case ScalarType.BYTES:
      if (!(v instanceof Uint8Array)) throw bad(fp, "bytes (a Uint8Array)", v);
      return varintSize(v.byteLength) + v.byteLength;
    case ScalarType.BOOL:
      if (typeof v !== "boolean") throw bad(fp, "a boolean", v);
      return 1;
    case ScalarType.INT32:
      if (typeof v !== "number" || !Number.isInteger(v)) throw bad(fp, fp.isEnum ? "an enum value (an int32)" : "an int32", v);
      if (v < INT32_MIN || v > INT32_MAX) throw bad(fp, "an int32", v, `${v}: out of range`);
      if (fp.closed && !fp.closed.has(v)) throw bad(fp, "one of the enum's values", v);
      return v < 0 ? 10 : varintSize(v);
    case ScalarType.SINT32:
      checkInt32(fp, v);
      return varintSize((((v as number) << 1) ^ ((v as number) >> 31)) >>> 0);
    case ScalarType.SFIXED32:
      checkInt32(fp, v);
      return 4;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      if (typeof v !== "number" || !Number.isInteger(v)) throw bad(fp, "a uint32", v);
      if (v < 0 || v > UINT32_MAX) throw bad(fp, "a uint32", v, `${v}: out of range`);
      return t === ScalarType.FIXED32 ? 4 : varintSize(v);
    case ScalarType.DOUBLE:
      if (typeof v !== "number") throw bad(fp, "a number", v);
      return 8;
    case ScalarType.FLOAT:
      if (typeof v !== "number") throw bad(fp, "a number", v);
      if (Number.isFinite(v) && (v > FLOAT32_MAX || v < -FLOAT32_MAX)) throw bad(fp, "a float", v, `${v}: out of range`);
      return 4;
    case ScalarType.INT64: {
      const b = int64(fp, v, false);
      // A negative int64 is ten bytes, as its 64-bit two's complement.
      return b >= 0n ? varint64Size(b) : 10;
    }
    case ScalarType.UINT64:
      return varint64Size(int64(fp, v, true));
    case ScalarType.SINT64: {
      const s = int64(fp, v, false);
      return varint64Size(BigInt.asUintN(64, (s << 1n) ^ (s >> 63n)));
    }
    case ScalarType.FIXED64:
      int64(fp, v, true);
      return 8;
    case ScalarType.SFIXED64:
      int64(fp, v, false);
      return 8;
  }
}

function checkInt32(fp: FieldPlan, v: unknown): void {
  if (typeof v !== "number" || !Number.isInteger(v)) throw bad(fp, "an int32", v);
  if (v < INT32_MIN || v > INT32_MAX) throw bad(fp, "an int32", v, `${v}: out of range`);
}

/** A 64-bit integer field's value (a bigint, or a number or decimal string as protobuf-es accepts them), checked. */
function int64(fp: FieldPlan, v: unknown, unsigned: boolean): bigint {
  if (typeof v === "bigint") {
    if (unsigned ? v < 0n || v > UINT64_MAX : v < INT64_MIN || v > INT64_MAX) throw bad(fp, unsigned ? "a uint64" : "an int64", v, `${v}: out of range`);
    return v;
  }
  if (typeof v === "number" || (typeof v === "string" && v.length > 0)) {
    try {
      return unsigned ? protoInt64.uParse(v) : protoInt64.parse(v);
    } catch {
      throw bad(fp, unsigned ? "a uint64" : "an int64", v, `${describe(v)}: out of range`);
    }
  }
  throw bad(fp, unsigned ? "a uint64" : "an int64", v);
}

/** A string's UTF-8 length with its prefix; it must be well-formed UTF-16 (no lone surrogate), as protobuf-es's checks require. */
function sizeString(fp: FieldPlan, v: unknown, lens: number[]): number {
  if (typeof v !== "string") throw bad(fp, "a string", v);
  let n = v.length;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdfff) {
      const d = v.charCodeAt(i + 1);
      if (c > 0xdbff || !(d >= 0xdc00 && d <= 0xdfff)) throw bad(fp, "a string", v, `${describe(v)}: invalid UTF-16 (a lone surrogate)`);
      // A pair: 2 UTF-16 units, 4 UTF-8 bytes.
      n += 2;
      i++;
    } else n += 2;
  }
  lens.push(n);
  return varintSize(n) + n;
}

function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  // Up to 2^35 (uint32 values and lengths).
  return 5;
}

function varint64Size(v: bigint): number {
  if (v < 0x100000000n) return varintSize(Number(v));
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
}

// ---- write pass: the same order as the size pass, taking each length it recorded

class Writer {
  readonly buf: Uint8Array;
  pos = 0;
  /** The next recorded length. */
  at = 0;
  /** The next recorded field (OPS). */
  op = 0;
  private view: DataView | undefined;

  constructor(
    size: number,
    readonly lens: readonly number[],
  ) {
    this.buf = new Uint8Array(size);
  }

  next(): number {
    return this.lens[this.at++]!;
  }

  varint(n: number): void {
    const b = this.buf;
    while (n > 0x7f) {
      b[this.pos++] = (n & 0x7f) | 0x80;
      n = n >>> 7;
    }
    b[this.pos++] = n;
  }

  varint64(v: bigint): void {
    if (v < 0x100000000n) {
      // Up to 32 bits: the number path (>>> keeps it unsigned).
      let n = Number(v);
      const b = this.buf;
      while (n > 0x7f) {
        b[this.pos++] = (n & 0x7f) | 0x80;
        n = Math.floor(n / 128);
      }
      b[this.pos++] = n;
      return;
    }
    while (v > 0x7fn) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  dv(): DataView {
    return (this.view ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength));
  }

  string(s: string, len: number): void {
    this.varint(len);
    const b = this.buf;
    let p = this.pos;
    if (len === s.length) {
      for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i);
      this.pos = p;
      return;
    }
    for (let i = 0; i < s.length; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) b[p++] = c;
      else if (c < 0x800) {
        b[p++] = 0xc0 | (c >> 6);
        b[p++] = 0x80 | (c & 0x3f);
      } else if (c >= 0xd800 && c <= 0xdbff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00);
        b[p++] = 0xf0 | (c >> 18);
        b[p++] = 0x80 | ((c >> 12) & 0x3f);
        b[p++] = 0x80 | ((c >> 6) & 0x3f);
        b[p++] = 0x80 | (c & 0x3f);
      } else {
        b[p++] = 0xe0 | (c >> 12);
        b[p++] = 0x80 | ((c >> 6) & 0x3f);
        b[p++] = 0x80 | (c & 0x3f);
      }
    }
    this.pos = p;
  }
}

/** Writes the fields the size pass recorded (OPS) for one message, up to its END. */
function writeOps(w: Writer): void {
  for (;;) {
    const fp = OPS[w.op++] as FieldPlan | typeof END | typeof UNKNOWN;
    const v = OPS[w.op++];
    if (fp === END) return;
    if (fp === UNKNOWN) {
      for (const u of v as NonNullable<Obj["$unknown"]>) {
        w.varint((u.no << 3) | u.wireType);
        w.buf.set(u.data, w.pos);
        w.pos += u.data.byteLength;
      }
    } else writeField(fp, v, w);
  }
}

function writeField(fp: FieldPlan, v: unknown, w: Writer): void {
  switch (fp.kind) {
    case Kind.Scalar:
      w.varint(fp.tag);
      writeScalar(fp.scalar, v, w);
      return;
    case Kind.Message:
      w.varint(fp.tag);
      writeSub(w);
      return;
    case Kind.ListMessage:
      for (let i = (v as Obj[]).length; i > 0; i--) {
        w.varint(fp.tag);
        writeSub(w);
      }
      return;
    case Kind.List:
      if (!fp.packed) {
        for (const item of v as unknown[]) {
          w.varint(fp.tag);
          writeScalar(fp.scalar, item, w);
        }
        return;
      }
      w.varint(fp.tag);
      w.varint(w.next());
      for (const item of v as unknown[]) writeScalar(fp.scalar, item, w);
      return;
    case Kind.Map: {
      const map = v as Record<string, unknown>;
      for (const key in map) {
        w.varint(fp.tag);
        w.varint(w.next());
        w.buf[w.pos++] = 0x0a;
        w.string(key, w.next());
        if (fp.mapMessage) {
          w.buf[w.pos++] = 0x12;
          writeSub(w);
        } else {
          w.buf[w.pos++] = 0x10 | wireType(fp.scalar);
          writeScalar(fp.scalar, map[key], w);
        }
      }
      return;
    }
  }
}

/** A length-delimited message: its length, then its recorded fields. */
function writeSub(w: Writer): void {
  w.varint(w.next());
  writeOps(w);
}

function writeScalar(t: ScalarType, v: unknown, w: Writer): void {
  switch (t) {
    case ScalarType.STRING:
      w.string(v as string, w.next());
      return;
    case ScalarType.BYTES: {
      const b = v as Uint8Array;
      w.varint(b.byteLength);
      w.buf.set(b, w.pos);
      w.pos += b.byteLength;
      return;
    }
    case ScalarType.BOOL:
      w.buf[w.pos++] = v ? 1 : 0;
      return;
    case ScalarType.INT32: {
      const n = v as number;
      if (n >= 0) w.varint(n);
      else w.varint64(BigInt.asUintN(64, BigInt(n)));
      return;
    }
    case ScalarType.SINT32:
      w.varint((((v as number) << 1) ^ ((v as number) >> 31)) >>> 0);
      return;
    case ScalarType.UINT32:
      w.varint(v as number);
      return;
    case ScalarType.FIXED32:
      w.dv().setUint32(w.pos, v as number, true);
      w.pos += 4;
      return;
    case ScalarType.SFIXED32:
      w.dv().setInt32(w.pos, v as number, true);
      w.pos += 4;
      return;
    case ScalarType.DOUBLE:
      w.dv().setFloat64(w.pos, v as number, true);
      w.pos += 8;
      return;
    case ScalarType.FLOAT:
      w.dv().setFloat32(w.pos, v as number, true);
      w.pos += 4;
      return;
    case ScalarType.INT64: {
      const b = asBig(v, false);
      w.varint64(b >= 0n ? b : BigInt.asUintN(64, b));
      return;
    }
    case ScalarType.UINT64:
      w.varint64(asBig(v, true));
      return;
    case ScalarType.SINT64: {
      const s = asBig(v, false);
      w.varint64(BigInt.asUintN(64, (s << 1n) ^ (s >> 63n)));
      return;
    }
    case ScalarType.FIXED64:
      w.dv().setBigUint64(w.pos, asBig(v, true), true);
      w.pos += 8;
      return;
    case ScalarType.SFIXED64:
      w.dv().setBigInt64(w.pos, asBig(v, false), true);
      w.pos += 8;
      return;
  }
}

/** A 64-bit value the size pass checked, as a bigint. */
function asBig(v: unknown, unsigned: boolean): bigint {
  if (typeof v === "bigint") return v;
  return unsigned ? protoInt64.uParse(v as string | number) : protoInt64.parse(v as string | number);
}

/** protobuf-es's own path for the types the plans leave to it: its checked clone, then toBinary. */
function fallback(schema: DescMessage, message: object, omit?: string): Uint8Array {
  const copy = clone(schema, message as never);
  const field = omit === undefined ? undefined : schema.fields.find((f) => f.localName === omit);
  if (field) clearField(copy, field);
  return toBinary(schema, copy);
}
