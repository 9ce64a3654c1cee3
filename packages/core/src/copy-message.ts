/**
 * A deep copy of a protobuf-es v2 message a store holds: plain objects (each keeping its
 * prototype, where explicit presence keeps its defaults), arrays, bytes and primitives,
 * own enumerable properties only (`$typeName` and `$unknown` included). The same value as
 * protobuf-es's clone(), without its reflection and per-string UTF-8 checks: a store copies
 * objects it has already stored or is about to store several times per write, and at
 * 1,000 nodes those checks were most of a heartbeat's cost (a node holds its VMs' ids).
 * Not for messages from outside the process (clone or fromBinary validate those).
 */
export function copyMessage<T>(o: T): T {
  return copyValue(o) as T;
}

function copyValue(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) {
    const out = new Array<unknown>(v.length);
    for (let i = 0; i < v.length; i++) out[i] = copyValue(v[i]);
    return out;
  }
  // A copy whatever the subclass: a Buffer's slice() is a view of the same memory.
  if (v instanceof Uint8Array) return new Uint8Array(v);
  const src = v as Record<string, unknown>;
  const out = Object.create(Object.getPrototypeOf(v) as object | null) as Record<string, unknown>;
  for (const k of Object.keys(src)) out[k] = copyValue(src[k]);
  return out;
}
