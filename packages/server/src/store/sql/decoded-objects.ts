import type { Resource } from "@quantix/core";

/**
 * Decoded objects a collection keeps at most (the most recently read). A VM as the bench
 * stores it (138 bytes encoded) costs about 1.7 KB here, its frozen object and a copy of
 * its bytes: about 7 MB when full.
 */
export const MAX_DECODED_OBJECTS = 4096;

interface Entry<T> {
  readonly version: bigint;
  /** The stored bytes it was decoded from (a private copy). */
  readonly data: Uint8Array;
  readonly object: T;
}

/**
 * The objects of one kind that reads (lists, gets) decoded last, keyed by id: a row read
 * again with the same resource_version and the same bytes is the same object, so it is
 * handed out again instead of being decoded and frozen anew (decoding is most of a page's
 * cost). Whether an entry is still right is decided by the row just read, never by the
 * entry's age: a write from any replica gives the row a new resource_version (and new
 * bytes), so it misses and is decoded; the bytes are compared as well, so that even a
 * revision used twice (a database restored from a backup) cannot hand out stale data.
 * At most `max` entries, the least recently read dropped first.
 */
export class DecodedObjects<T extends Resource> {
  private readonly entries = new Map<string, Entry<T>>();

  constructor(private readonly max = MAX_DECODED_OBJECTS) {}

  get size(): number {
    return this.entries.size;
  }

  /** The object row `id` stores as `data` at `version`: the one decoded before if both match, else `decode`d now (and kept). */
  get(id: string, data: Uint8Array, version: bigint, decode: (data: Uint8Array, version: bigint) => T): T {
    const e = this.entries.get(id);
    this.entries.delete(id);
    if (e && e.version === version && Buffer.compare(e.data, data) === 0) {
      this.entries.set(id, e);
      return e.object;
    }
    const object = decode(data, version);
    // A copy: the driver's buffer may be a slice of a larger one (or reused by the engine).
    this.entries.set(id, { version, data: new Uint8Array(data), object });
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
    return object;
  }
}
