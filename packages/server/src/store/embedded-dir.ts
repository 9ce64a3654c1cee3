import { accessSync, constants, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join, resolve } from "node:path";
import { QuantixError } from "@quantix/core";

/** The marker that makes a directory a Quantix data directory, and its format. */
const MARKER = "quantix-data.json";
const FORMAT = 1;
const LOCK = "quantix.lock";
/** 50 ms waits for a dead holder's socket to be freed (2 s in all). */
const SOCKET_RELEASE_WAITS = 40;
const IN_USE_TODO = "Stop that process, or give this one its own QUANTIX_DATA_DIR (or a shared PostgreSQL: QUANTIX_STORE=postgres://...).";
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

/** A process as /proc/<pid>/stat shows it: its state letter and its start time (clock ticks after boot). */
interface ProcStat {
  readonly state: string;
  readonly start: string;
}

/** /proc/<pid>/stat of `pid`, undefined when there is no such process (the name in parentheses may hold anything). */
function procStat(pid: number): ProcStat | undefined {
  const stat = readIfPresent(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields.length > 19 ? { state: fields[0]!, start: fields[19]! } : undefined;
}

/**
 * What this process writes into the lock: its pid and its start time. The start time
 * tells the holder from a later process that was given the same pid.
 */
function lockOwner(): string {
  const self = procStat(process.pid);
  return self ? `${process.pid} ${self.start}` : String(process.pid);
}

/**
 * Whether the process a lock names still holds it: it exists, has not exited (a zombie,
 * Z, or a dying process, X, is what a SIGKILLed holder stays until its parent reaps it)
 * and started when the lock says. A lock of an older release names only a pid: then a
 * Node process with that pid is taken as its holder.
 */
function holds(pid: number, start: string | undefined): boolean {
  if (!existsSync("/proc/self/stat")) {
    // No procfs to ask: a signal 0 says whether the pid exists at all.
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === "EPERM";
    }
  }
  const stat = procStat(pid);
  if (!stat || stat.state === "Z" || stat.state === "X" || stat.state === "x") return false;
  if (start !== undefined) return stat.start === start;
  return readIfPresent(`/proc/${pid}/cmdline`).includes("node");
}

/**
 * An OS lock on a directory: a listening socket in Linux's abstract namespace named after
 * the directory's device and inode. The kernel frees it the moment its process dies (a
 * zombie holds no sockets), and two processes starting together cannot both get it,
 * which a lock file alone cannot promise when both find a dead holder's file and take it
 * over. Resolves to undefined when another process holds it, and to "unavailable" where
 * there is no abstract namespace (the lock file then works alone).
 */
async function holdDirSocket(dir: string): Promise<Server | "unavailable" | undefined> {
  const { dev, ino } = statSync(dir);
  const server = createServer();
  return new Promise((resolve) => {
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "EADDRINUSE" ? undefined : "unavailable"));
    server.listen({ path: `\0quantix-data-dir-${dev}-${ino}` }, () => {
      // Held for as long as the process lives, without keeping it alive.
      server.unref();
      resolve(server);
    });
  });
}

/**
 * Checks a data directory before anything is written to it, and takes its lock. Refuses
 * (changing nothing) a path that is not a directory, one it cannot read and write, a
 * non-empty directory that is not ours, a marker or database it cannot make sense of,
 * and a directory another live process holds. A missing directory is created.
 */
export async function openDataDir(raw: string, knownSchema: number): Promise<DataDir> {
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
  // A lock file alone (and the copy it is linked from) is what a process that died before writing the marker leaves.
  const entries = readdirSync(dir).filter((e) => e !== LOCK && !e.startsWith(`${LOCK}.`));
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
  const owner = lockOwner();
  let socket = await holdDirSocket(dir);
  // A holder killed a moment ago may show as a zombie while its other threads still close
  // its files: its socket goes within moments. A live holder is refused at once.
  for (let wait = 0; socket === undefined && !lockHeld(lock) && wait < SOCKET_RELEASE_WAITS; wait++) {
    await new Promise((r) => setTimeout(r, 50));
    socket = await holdDirSocket(dir);
  }
  if (socket === undefined) {
    const holder = readIfPresent(lock).trim().split(" ")[0] || "unknown";
    refuse(dir, `is in use by another Quantix process (pid ${holder})`, IN_USE_TODO);
  }
  try {
    takeLock(dir, lock, owner);
  } catch (err) {
    if (socket !== "unavailable") socket.close();
    throw err;
  }
  return {
    path: dir,
    database: join(dir, DATABASE),
    recordSchema(version: number) {
      if (recorded.schema !== version) writeMarker(marker, (recorded = { ...recorded, schema: version }));
    },
    release() {
      if (readIfPresent(lock).trim() === owner) unlinkSync(lock);
      if (socket !== "unavailable") socket.close();
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

/**
 * One process per data directory: the embedded engine corrupts files shared by two. The
 * lock is a file holding its owner's pid and start time; it appears with its content in
 * one step (written aside, then hard-linked into place, which fails if it exists), so a
 * starting process never reads a half-written lock. A lock whose owner no longer runs is
 * taken over.
 */
/** Whether the process the lock file names still holds it. */
function lockHeld(lock: string): boolean {
  const [pid, start] = readIfPresent(lock).trim().split(" ");
  const holder = Number(pid);
  return Number.isInteger(holder) && holder > 0 && holder !== process.pid && holds(holder, start);
}

function takeLock(dir: string, lock: string, owner: string): void {
  const aside = `${lock}.${process.pid}`;
  writeFileSync(aside, owner, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        linkSync(aside, lock);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        if (lockHeld(lock)) refuse(dir, `is in use by another Quantix process (pid ${readIfPresent(lock).trim().split(" ")[0]})`, IN_USE_TODO);
        // A lock left by a process that died (a crash, SIGKILL): take it over.
        try {
          unlinkSync(lock);
        } catch {
          // Another starting process removed it first; the next attempt decides.
        }
      }
    }
  } finally {
    unlinkSync(aside);
  }
  refuse(dir, "its lock file could not be taken", "Retry.");
}
