import { toBinary, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { encodeFrozen } from "@quantix/core";

/**
 * Encodes a message, reusing the bytes of frozen messages. Stored objects are deeply
 * frozen and never change, so a VM fanned out to 10,000 watchers, or read by every
 * GetVM, is encoded once. A message that is not frozen but holds frozen messages (a
 * VmUpdate around a stored VM, a ListVMsResponse) is encoded without them, and their
 * cached bytes are appended as length-delimited fields: the same wire message, since a
 * parser accepts fields in any order.
 */
export function encodeMessage(schema: DescMessage, msg: object): Uint8Array {
  // The checked encoder (ADR 0014), once per frozen message: a durable store that wrote it has its bytes already.
  if (Object.isFrozen(msg)) return encodeFrozen(schema, msg);
  const record = msg as Record<string, unknown>;
  const frozen = schema.fields.filter((f) => isFrozenMessageField(f, record[f.localName]));
  if (frozen.length === 0) return toBinary(schema, msg as never);
  const rest: Record<string, unknown> = { ...record };
  for (const f of frozen) rest[f.localName] = f.fieldKind === "list" ? [] : undefined;
  const parts: Uint8Array[] = [toBinary(schema, rest as never)];
  for (const f of frozen) {
    const sub = (f as { message: DescMessage }).message;
    const values = f.fieldKind === "list" ? (record[f.localName] as object[]) : [record[f.localName] as object];
    for (const v of values) {
      const bytes = encodeMessage(sub, v);
      parts.push(varint((f.number << 3) | 2), varint(bytes.length), bytes);
    }
  }
  return Buffer.concat(parts);
}

function isFrozenMessageField(f: DescField, value: unknown): boolean {
  if (f.oneof) return false;
  if (f.fieldKind === "message") return typeof value === "object" && value !== null && Object.isFrozen(value);
  if (f.fieldKind === "list" && f.listKind === "message") {
    const list = value as unknown[];
    return list.length > 0 && list.every((x) => Object.isFrozen(x));
  }
  return false;
}

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Uint8Array.from(out);
}
