import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { QuantixError } from "@quantix/core";

/** The marker that makes a directory a Quantix data directory, and its format. */
const MARKER = "quantix-data.json";
const FORMAT = 1;
const LOCK = "quantix.lock";
/** Where the embedded PostgreSQL (PGlite) keeps its files, inside the data directory. */
const DATABASE = "pg";

/** A data directory this process owns until `release()`. */
export interface DataDir {
  readonly path: string;
  /** The embedded database's directory. */
  readonly database: string;
  /** Records the schema version the database was migrated to (checked at the next start before it is opened). */
  recordSchema(version: number): void;
  release(): void;
}

interface Marker {
  format?: unknown;
  engine?: unknown;
  schema?: unknown;
}

function refuse(dir: string, what: string, todo: string): never {
  throw new QuantixError("failed_precondition", `QUANTIX_DATA_DIR ${dir}: ${what}. ${todo} Nothing was changed.`);
}

/** Whether `pid` is a live Node process (a pid reused by another program does not count). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  const cmdline = readIfPresent(`/proc/${pid}/cmdline`);
  return cmdline === "" || cmdline.includes("node");
}

/**
 * Checks a data directory before anything is written to it, and takes its lock. Refuses
 * (changing nothing) a path that is not a directory, one it cannot read and write, a
 * non-empty directory that is not ours, a marker or database it cannot make sense of,
 * and a directory another live process holds. A missing directory is created.
 */
export function openDataDir(raw: string, knownSchema: number): DataDir {
  const dir = resolve(raw);
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) refuse(dir, "exists and is not a directory", "Point QUANTIX_DATA_DIR at a directory.");
    try {
      accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch {
      refuse(dir, "cannot be read and written by this user", "Fix its permissions or point QUANTIX_DATA_DIR elsewhere.");
    }
  } else {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  // A lock file alone is what a process that died before writing the marker leaves.
  const entries = readdirSync(dir).filter((e) => e !== LOCK);
  const marker = join(dir, MARKER);
  if (entries.length > 0 && !entries.includes(MARKER)) {
    refuse(dir, `is not empty and is not a Quantix data directory (no ${MARKER})`, "Use an empty or new directory.");
  }
  let recorded: Marker = { format: FORMAT, engine: "pglite" };
  if (entries.includes(MARKER)) {
    try {
      recorded = JSON.parse(readFileSync(marker, "utf8")) as Marker;
    } catch (err) {
      refuse(dir, `its ${MARKER} cannot be read (${(err as Error).message}): the directory may be corrupt`, "Restore it from a backup, or move it away to start empty.");
    }
    if (recorded.format !== FORMAT) refuse(dir, `has data format ${JSON.stringify(recorded.format)}, and this binary reads format ${FORMAT}`, "Run the Quantix release that wrote it.");
    if (typeof recorded.schema === "number" && recorded.schema > knownSchema) {
      refuse(
        dir,
        `its database's schema is at version ${recorded.schema}, newer than this Quantix binary understands (version ${knownSchema})`,
        "Run a Quantix release at least as new as the one that last wrote it, or point QUANTIX_DATA_DIR elsewhere.",
      );
    }
    const pgVersion = join(dir, DATABASE, "PG_VERSION");
    if (entries.includes(DATABASE) && !/^\d+\s*$/.test(readIfPresent(pgVersion))) {
      refuse(dir, `its database (${DATABASE}/) is damaged: ${DATABASE}/PG_VERSION is missing or unreadable`, "Restore it from a backup, or move it away to start empty.");
    }
  } else {
    // The marker first, then the lock: a crash in between leaves a directory we recognise.
    writeMarker(marker, recorded);
  }
  const lock = join(dir, LOCK);
  takeLock(dir, lock);
  return {
    path: dir,
    database: join(dir, DATABASE),
    recordSchema(version: number) {
      if (recorded.schema !== version) writeMarker(marker, (recorded = { ...recorded, schema: version }));
    },
    release() {
      if (readIfPresent(lock).trim() === String(process.pid)) unlinkSync(lock);
    },
  };
}

/** Writes the marker atomically (a new file renamed over the old). */
function writeMarker(path: string, marker: Marker): void {
  writeFileSync(`${path}.tmp`, JSON.stringify(marker) + "\n");
  renameSync(`${path}.tmp`, path);
}

function readIfPresent(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** One process per data directory: the embedded engine corrupts files shared by two. */
function takeLock(dir: string, lock: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lock, "wx", 0o600);
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = Number(readIfPresent(lock).trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
        refuse(dir, `is in use by another Quantix process (pid ${holder})`, "Stop that process, or give this one its own QUANTIX_DATA_DIR (or a shared PostgreSQL: QUANTIX_STORE=postgres://...).");
      }
      // A lock left by a process that died (a crash, SIGKILL): take it over.
      unlinkSync(lock);
    }
  }
  refuse(dir, "its lock file could not be taken", "Retry.");
}
