import { create, ScalarType, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

/** What decodeFlat knows of a message type, found once. */
interface Plan {
  /** Field number to local name of its plain string fields (singular, in no oneof). */
  readonly fields: ReadonlyMap<number, string>;
  /**
   * Its zero message when that is a plain object of primitives (proto3 scalars and enums:
   * no list, map, oneof or default on a prototype), which a spread copies exactly; else
   * undefined, and create() makes each one.
   */
  readonly zero: object | undefined;
}
const plans = new WeakMap<DescMessage, Plan>();
/** Where decodeFlat reads (it runs to its end without yielding, so one cursor serves every call). */
let at = 0;

/**
 * Decodes a request made only of plain string fields in ASCII (GetVMRequest's `id`, and
 * most requests that name resources), as protobuf-es's fromBinary would, without its
 * reflection (a ReflectMessage and its two Maps, a BinaryReader, a read context: about 1 KB
 * and half a microsecond a call, more than the rest of a unary read's decoding). Returns
 * undefined for anything else: a field that is not a plain string, an unknown field, a
 * wire type that is not length-delimited, a string that is not ASCII, a cut or malformed
 * varint. The caller then decodes with fromBinary, which gives that input its usual
 * result or error; the message returned here is the one fromBinary returns (create()'s
 * zero message with each field read set, a later occurrence winning).
 */
export function decodeFlat<T extends DescMessage>(schema: T, bytes: Uint8Array): MessageShape<T> | undefined {
  const { fields, zero } = planOf(schema);
  let buf: Buffer | undefined;
  let msg: Record<string, unknown> | undefined;
  at = 0;
  const end = bytes.length;
  while (at < end) {
    const tag = varint(bytes);
    const name = tag >= 0 && (tag & 7) === 2 ? fields.get(tag >>> 3) : undefined;
    if (name === undefined) return undefined;
    const len = varint(bytes);
    const stop = at + len;
    if (len < 0 || stop > end) return undefined;
    for (let i = at; i < stop; i++) if (bytes[i]! >= 0x80) return undefined;
    // ASCII reads the same in latin1 as in UTF-8 (which fromBinary decodes), without a decoder.
    buf ??= Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    (msg ??= zeroMessage(schema, zero))[name] = buf.toString("latin1", at, stop);
    at = stop;
  }
  return (msg ?? zeroMessage(schema, zero)) as MessageShape<T>;
}

/** A new zero message of `schema`: a copy of its plain zero, where it has one. */
function zeroMessage(schema: DescMessage, zero: object | undefined): Record<string, unknown> {
  return (zero ? { ...zero } : create(schema)) as Record<string, unknown>;
}

/** The varint at the cursor, moving past it: a tag or a length, below 2^28 (at most 4 bytes); -1 when longer or cut. */
function varint(bytes: Uint8Array): number {
  let n = 0;
  for (let shift = 0; shift <= 21; shift += 7) {
    if (at >= bytes.length) return -1;
    const b = bytes[at++]!;
    n |= (b & 0x7f) << shift;
    if (b < 0x80) return n;
  }
  return -1;
}

function planOf(schema: DescMessage): Plan {
  let plan = plans.get(schema);
  if (!plan) {
    const fields = new Map<number, string>();
    for (const f of schema.fields) {
      if (f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && f.oneof === undefined) fields.set(f.number, f.localName);
    }
    const zero = create(schema) as Record<string, unknown>;
    const primitives = Object.getPrototypeOf(zero) === Object.prototype && Object.values(zero).every((v) => typeof v !== "object" || v === null);
    plans.set(schema, (plan = { fields, zero: primitives ? zero : undefined }));
  }
  return plan;
}
