import { lstat, mkdir, readdir, readFile, readlink, realpath, rename, rm, statfs, symlink, unlink, writeFile } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import { notFound, QuantixError } from "@quantix/core";
import { underShared } from "../migration-storage.js";
import { KeyedLock } from "./keyed-lock.js";

/** The pool types the agent manages. */
export type ManagedPoolType = "DIR" | "SHARED_DIR";

/** A pool found on this host, its marker checked. */
export interface ResolvedPool {
  readonly id: string;
  readonly type: ManagedPoolType;
  /** The pool's directory, symlinks resolved. */
  readonly dir: string;
}

/** A file system's capacity, in bytes. */
export interface FsCapacity {
  readonly totalBytes: bigint;
  readonly availableBytes: bigint;
  readonly usedBytes: bigint;
}

/** The marker in every pool directory; it holds the pool id. */
export const POOL_MARKER = ".quantix-pool";

/**
 * The pools of one host. Each pool has an entry `<root>/<pool id>`: a DIR pool's
 * directory itself, or for a SHARED_DIR pool a symlink to the shared directory it adopted.
 * So a pool is found from its id alone, and survives an agent restart with no other
 * record. Before anything is written into a pool its marker is read again: an unmounted
 * share shows up as a directory without it and is never written to.
 */
export class Pools {
  constructor(
    /** Where pool entries live (VMCP_POOL_ROOT). */
    readonly root: string,
    /** The agent's shared directories (VMCP_SHARED_DIRS); SHARED_DIR pools lie below one. */
    readonly sharedDirs: readonly string[],
  ) {}

  /** Ensures of one pool run one at a time: two at once raced on its directory and marker. */
  readonly #ensuring = new KeyedLock();

  /** Makes a pool exist (idempotent); see EnsurePool in storage.proto. */
  async ensure(id: string, type: ManagedPoolType, path: string): Promise<ResolvedPool> {
    return this.#ensuring.with([id], () => this.#ensure(id, type, path));
  }

  async #ensure(id: string, type: ManagedPoolType, path: string): Promise<ResolvedPool> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const entry = join(this.root, id);
    const existing = await lstat(entry).catch(() => undefined);
    if (existing && !existing.isDirectory() && !existing.isSymbolicLink()) throw new QuantixError("failed_precondition", `the pool root holds a file named '${id}' that is not a pool`);
    if (type === "DIR") {
      if (existing?.isSymbolicLink()) throw new QuantixError("failed_precondition", `pool '${id}' exists on this host as a SHARED_DIR pool`);
      if (!existing) {
        await mkdir(entry, { mode: 0o700 });
        await writeMarker(entry, id).catch(async (err: unknown) => {
          await rm(entry, { recursive: true, force: true });
          throw err;
        });
      } else await adopt(entry, id, "the pool's directory");
      return { id, type, dir: entry };
    }
    const dir = await this.#sharedDir(path);
    if (existing && !existing.isSymbolicLink()) throw new QuantixError("failed_precondition", `pool '${id}' exists on this host as a DIR pool`);
    if (existing && (await realpath(entry).catch(() => undefined)) !== dir) {
      // A dangling link is the pool's own directory gone (an unmounted share): only that share can take it back.
      throw new QuantixError("failed_precondition", `pool '${id}' is on this host at the shared directory ${await readlink(entry)}, which is not ${path}`);
    }
    await adopt(dir, id, "the shared directory");
    if (!existing) await symlink(dir, entry);
    return { id, type, dir };
  }

  /** Pools being deleted: resolve() refuses them, so no volume call starts in one. */
  readonly #deleting = new Set<string>();

  /** Runs `fn` (a pool's deletion) while resolve() refuses pool `id`. */
  async deleting<T>(id: string, fn: () => Promise<T>): Promise<T> {
    if (this.#deleting.has(id)) throw new QuantixError("aborted", `pool '${id}' is being deleted by another call`);
    this.#deleting.add(id);
    try {
      return await fn();
    } finally {
      this.#deleting.delete(id);
    }
  }

  /** The pool `id` with its marker checked: NOT_FOUND when it is not on this host, FAILED_PRECONDITION when its directory is not (or no longer) its own. */
  async resolve(id: string): Promise<ResolvedPool> {
    const entry = join(this.root, id);
    const st = await lstat(entry).catch(() => undefined);
    if (!st) throw notFound("pool", id);
    if (this.#deleting.has(id)) throw new QuantixError("failed_precondition", `pool '${id}' is being deleted`);
    const type: ManagedPoolType = st.isSymbolicLink() ? "SHARED_DIR" : "DIR";
    const dir = type === "DIR" ? entry : await realpath(entry).catch(() => undefined);
    if (dir === undefined) throw new QuantixError("failed_precondition", `pool '${id}': its shared directory is gone (is the share mounted?)`);
    if (type === "SHARED_DIR" && !(await this.#underShared(dir))) throw new QuantixError("failed_precondition", `pool '${id}': its directory is no longer below a shared directory (VMCP_SHARED_DIRS)`);
    const marker = await readMarker(dir);
    if (marker === undefined) throw new QuantixError("failed_precondition", `pool '${id}': its directory has no ${POOL_MARKER} marker (is the share mounted?); nothing is written to it`);
    if (marker !== id) throw new QuantixError("failed_precondition", `pool '${id}': its directory's ${POOL_MARKER} marker names another pool ('${marker}')`);
    return { id, type, dir };
  }

  /** Removes a pool's marker and entry (and a DIR pool's directory); the caller checked it holds no volumes. */
  async remove(pool: ResolvedPool): Promise<void> {
    const left = (await readdir(pool.dir)).filter((n) => n !== POOL_MARKER && !n.endsWith(".partial"));
    if (left.length > 0) throw new QuantixError("failed_precondition", `pool '${pool.id}' holds ${left.length} file(s) the agent did not create; remove them first`);
    if (pool.type === "DIR") {
      await rm(pool.dir, { recursive: true, force: true });
      return;
    }
    for (const n of await readdir(pool.dir)) if (n.endsWith(".partial")) await rm(join(pool.dir, n), { force: true });
    await unlink(join(pool.dir, POOL_MARKER));
    await unlink(join(this.root, pool.id));
  }

  /** Capacity of the file system holding `dir`. */
  async capacity(dir: string): Promise<FsCapacity> {
    const s = await statfs(dir, { bigint: true });
    return { totalBytes: s.blocks * s.bsize, availableBytes: s.bavail * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize };
  }

  /** A SHARED_DIR request's path, resolved: an existing directory strictly below a shared directory. */
  async #sharedDir(path: string): Promise<string> {
    const bad = (description: string) => new QuantixError("invalid_argument", `invalid request: path: ${description}`, [{ field: "path", reason: "INVALID_VALUE", description }]);
    if (path === "") throw new QuantixError("invalid_argument", "invalid request: path: is required for SHARED_DIR", [{ field: "path", reason: "REQUIRED", description: "is required for SHARED_DIR: an existing directory below a shared directory (VMCP_SHARED_DIRS)" }]);
    if (!isAbsolute(path) || normalize(path) !== path || path.endsWith("/") || /[\u0000-\u001f\u007f]/.test(path) || path.length > 1024) {
      throw bad("must be a normalized absolute path without a trailing '/' or control characters, at most 1024 characters");
    }
    const outside = () =>
      this.sharedDirs.length === 0 ? bad("this agent has no shared directory (VMCP_SHARED_DIRS), so it serves no SHARED_DIR pool") : bad(`must lie strictly below a shared directory of this agent (${this.sharedDirs.join(", ")})`);
    // As written, then as it resolves: a symlink below a shared directory cannot lead out of it.
    if (!this.sharedDirs.some((d) => d !== path && underShared(path, [d]))) throw outside();
    const dir = await realpath(path).catch(() => undefined);
    const st = dir === undefined ? undefined : await lstat(dir);
    if (dir === undefined || !st?.isDirectory()) throw new QuantixError("failed_precondition", `${path} is not an existing directory on this host (is the share mounted?)`);
    if (!(await this.#underShared(dir))) throw outside();
    return dir;
  }

  async #underShared(dir: string): Promise<boolean> {
    const shared = await Promise.all(this.sharedDirs.map((d) => realpath(d).catch(() => d)));
    return shared.some((d) => d !== dir && underShared(dir, [d]));
  }
}

async function readMarker(dir: string): Promise<string | undefined> {
  const text = await readFile(join(dir, POOL_MARKER), { encoding: "utf8" }).catch(() => undefined);
  return text?.slice(0, 64).trim();
}

/** Writes the marker through a temporary file and a rename, so it is whole or absent. */
async function writeMarker(dir: string, id: string): Promise<void> {
  const tmp = join(dir, `${POOL_MARKER}.partial`);
  await writeFile(tmp, `${id}\n`, { mode: 0o600 });
  await rename(tmp, join(dir, POOL_MARKER));
}

/** Takes `dir` for pool `id`: fine when its marker names `id`; marked when empty; refused otherwise. */
async function adopt(dir: string, id: string, what: string): Promise<void> {
  const marker = await readMarker(dir);
  if (marker === id) return;
  if (marker !== undefined) throw new QuantixError("failed_precondition", `${what} belongs to another pool: its ${POOL_MARKER} marker names '${marker}'`);
  const names = (await readdir(dir)).filter((n) => n !== `${POOL_MARKER}.partial`);
  if (names.length > 0) throw new QuantixError("failed_precondition", `${what} is not empty and has no ${POOL_MARKER} marker; the agent takes only an empty directory or its own pool's`);
  await writeMarker(dir, id);
}
