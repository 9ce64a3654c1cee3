/**
 * Makes `next`, a new version of a stored object that is not frozen yet, hold the very
 * parts of `previous` (the stored, frozen version it replaces) that it equals: a message,
 * a list or a map left as it was is then one object in both versions instead of two.
 *
 * A store keeps old versions for watchers to resume from (its change history), so each
 * write of a large object used to keep a whole copy of it: a heartbeat, which changes a
 * node's usage and times, kept about 4 KiB of node. Shared parts are frozen already (the
 * store freezes what it keeps; deepFreeze stops at them), so sharing them lets no one
 * change either version.
 *
 * Values are compared as copyMessage copies them: own enumerable properties of plain
 * objects of the same prototype, arrays, bytes, and primitives by Object.is (so 0 and -0,
 * which encode differently, are not one value). Returns whether `next` equals `previous`.
 */
export function shareUnchanged(next: object, previous: object): boolean {
  return share(next as Record<string, unknown>, previous as Record<string, unknown>);
}

function share(next: Record<string, unknown>, prev: Record<string, unknown>): boolean {
  if (Array.isArray(next)) {
    if (!Array.isArray(prev)) return false;
    let same = next.length === prev.length;
    const n = Math.min(next.length, prev.length);
    for (let i = 0; i < n; i++) if (!shareSlot(next, i, next[i], prev[i])) same = false;
    return same;
  }
  if (ArrayBuffer.isView(next) || ArrayBuffer.isView(prev)) return next instanceof Uint8Array && prev instanceof Uint8Array && sameBytes(next, prev);
  if (Object.getPrototypeOf(next) !== Object.getPrototypeOf(prev)) return false;
  let same = true;
  let count = 0;
  for (const k of Object.keys(next)) {
    count++;
    if (!Object.prototype.hasOwnProperty.call(prev, k)) same = false;
    else if (!shareSlot(next, k, next[k], prev[k])) same = false;
  }
  return same && count === Object.keys(prev).length;
}

/** Whether `a` (at `key` of `holder`) equals `b`; when it does and `b` is a frozen object, `b` takes its place. */
function shareSlot(holder: Record<string | number, unknown>, key: string | number, a: unknown, b: unknown): boolean {
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return Object.is(a, b);
  if (a === b) return true;
  if (!share(a as Record<string, unknown>, b as Record<string, unknown>)) return false;
  // Bytes are never frozen (typed arrays cannot be); stored ones are not changed either.
  if (Object.isFrozen(b) || b instanceof Uint8Array) holder[key] = b;
  return true;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
