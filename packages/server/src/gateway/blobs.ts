import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { QuantixError } from "@quantix/core";
import type { Param, Queryable } from "../store/sql/sql-driver.js";

/**
 * Where the SQL engine keeps documents and diffs too large to sit well in a row
 * (more than INLINE_MAX_BYTES): a 100 MB value as one bytea costs PGlite (WebAssembly)
 * over a minute to write, and node-postgres seconds to read in one message. Blobs are
 * addressed by their content's SHA-256, so a checkpoint and the node's document that are
 * the same bytes are stored once.
 */
export interface BlobStore {
  /** Stores `bytes` (as part of the transaction `q` where the store is the database); returns its ref. */
  put(q: Queryable, bytes: Uint8Array): Promise<string>;
  get(q: Queryable, ref: string): Promise<Uint8Array>;
  /**
   * Removes a blob no row references any more: at once in the transaction, or (files)
   * by the function returned, to run after the commit.
   */
  drop(q: Queryable, ref: string): Promise<(() => Promise<void>) | undefined>;
}

/** Values up to this size stay in their row. */
export const INLINE_MAX_BYTES = 256 * 1024;

const refOf = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/**
 * Blobs as files of the embedded store's data directory, one per ref. A blob is written
 * and synced before the transaction that references it commits (a crash in between
 * leaves an unreferenced file, never a reference to a missing one).
 */
export class FileBlobs implements BlobStore {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private path(ref: string): string {
    if (!/^[0-9a-f]{64}$/.test(ref)) throw new QuantixError("data_loss", `document blob reference '${ref.slice(0, 80)}' is not a SHA-256`);
    return join(this.dir, ref);
  }

  async put(_q: Queryable, bytes: Uint8Array): Promise<string> {
    const ref = refOf(bytes);
    const path = this.path(ref);
    const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
    const f = await open(tmp, "w", 0o600);
    try {
      await f.writeFile(bytes);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
    const d = await open(this.dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
    return ref;
  }

  async get(_q: Queryable, ref: string): Promise<Uint8Array> {
    try {
      return await readFile(this.path(ref));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new BlobGone(ref);
      throw err;
    }
  }

  async drop(_q: Queryable, ref: string): Promise<() => Promise<void>> {
    return () => rm(this.path(ref), { force: true });
  }
}

/** Bytes of one row of a blob in the database. */
const CHUNK_BYTES = 1024 * 1024;
/** Chunks written per statement. */
const CHUNKS_PER_INSERT = 8;

/** Blobs as 1 MiB rows of quantix_dom_blobs, written in the transaction that references them (PostgreSQL: every replica reads them). */
export class SqlBlobs implements BlobStore {
  async put(q: Queryable, bytes: Uint8Array): Promise<string> {
    const ref = refOf(bytes);
    const { rows } = await q.query("SELECT 1 FROM quantix_dom_blobs WHERE ref = $1 AND seq = 0", [ref]);
    if (rows.length > 0) return ref;
    const chunks: Uint8Array[] = [];
    for (let o = 0; o < bytes.length; o += CHUNK_BYTES) chunks.push(bytes.subarray(o, o + CHUNK_BYTES));
    if (chunks.length === 0) chunks.push(new Uint8Array(0));
    for (let i = 0; i < chunks.length; i += CHUNKS_PER_INSERT) {
      const part = chunks.slice(i, i + CHUNKS_PER_INSERT);
      const params: Param[] = [ref];
      const values = part.map((c, j) => {
        params.push(i + j, c);
        return `($1, $${params.length - 1}, $${params.length})`;
      });
      await q.query(`INSERT INTO quantix_dom_blobs (ref, seq, bytes) VALUES ${values.join(", ")} ON CONFLICT DO NOTHING`, params);
    }
    return ref;
  }

  async get(q: Queryable, ref: string): Promise<Uint8Array> {
    const { rows } = await q.query<{ bytes: Uint8Array }>("SELECT bytes FROM quantix_dom_blobs WHERE ref = $1 ORDER BY seq", [ref]);
    if (rows.length === 0) throw new BlobGone(ref);
    return rows.length === 1 ? new Uint8Array(rows[0]!.bytes) : Buffer.concat(rows.map((r) => r.bytes));
  }

  async drop(q: Queryable, ref: string): Promise<undefined> {
    await q.query("DELETE FROM quantix_dom_blobs WHERE ref = $1", [ref]);
    return undefined;
  }
}

/** A blob that a row referenced and is gone: replaced meanwhile (a reader retries), or lost. */
export class BlobGone extends QuantixError {
  constructor(readonly ref: string) {
    super("data_loss", `a stored document blob (${ref.slice(0, 12)}…) is missing: it was replaced while being read (retry), or the gateway's storage lost it`);
  }
}
