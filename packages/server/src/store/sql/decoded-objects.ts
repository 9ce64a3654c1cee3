import type { Resource } from "@quantix/core";

/**
 * Decoded objects a collection keeps at most (the most recently read). A VM as the bench
 * stores it (138 bytes encoded) costs about 1.7 KB here, its frozen object and its bytes
 * in hex: about 7 MB when full.
 */
export const MAX_DECODED_OBJECTS = 4096;

interface Entry<T> {
  readonly version: bigint;
  /** The stored bytes it was decoded from, in hex (a string: nobody can change it). */
  readonly hex: string;
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
 *
 * At most `max` entries, in two generations of up to max/2: entries read go to the young
 * one; when it is full it becomes the old one and the old one is dropped whole. (Evicting
 * one entry at a time from the front of a Map costs microseconds per eviction in V8, which
 * skips the deleted entries before it.)
 */
export class DecodedObjects<T extends Resource> {
  private young = new Map<string, Entry<T>>();
  private old = new Map<string, Entry<T>>();
  private readonly half: number;

  constructor(max = MAX_DECODED_OBJECTS) {
    this.half = Math.max(1, Math.floor(max / 2));
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  /**
   * The object row `id` stores as `data` (its bytes, or their hex as the store reads them:
   * `encode(data, 'hex')`) at `version`: the one decoded before if both match, else
   * `decode`d now (and kept). Reading the hex text lets a row that is cached cost a string
   * comparison: no buffer made from the driver's hex text, no bytes compared.
   */
  get(id: string, data: Uint8Array | string, version: bigint, decode: (data: Uint8Array, version: bigint) => T): T {
    const hex = typeof data === "string" ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("hex");
    let e = this.young.get(id);
    const young = e !== undefined;
    if (!young) {
      e = this.old.get(id);
      if (e) this.old.delete(id);
    }
    if (e && e.version === version && e.hex === hex) {
      if (!young) this.keep(id, e);
      return e.object;
    }
    const object = decode(typeof data === "string" ? Buffer.from(data, "hex") : data, version);
    this.keep(id, { version, hex, object });
    return object;
  }

  private keep(id: string, e: Entry<T>): void {
    this.young.set(id, e);
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
  }
}
