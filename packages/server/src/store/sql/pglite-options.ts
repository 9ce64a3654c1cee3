import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { PGlite, type PGliteOptions } from "@electric-sql/pglite";

/**
 * PostgreSQL's shared buffer pool inside PGlite. Its default is 128 MB, and PGlite touches
 * all of it when it starts, so it was resident from the first second (with the WASM
 * memory grown to 189 MB to hold it). The control plane's working set is far smaller: pages
 * it misses are read from the operating system's page cache (the data directory is a real
 * directory), so durability does not depend on it. 16 MB keeps the idle footprint small.
 */
export const SHARED_BUFFERS = "16MB";

/**
 * The options the embedded database opens with: PGlite's own start parameters (among them
 * `-F`, as before: PGlite writes every page through to the data directory's files itself,
 * which is what a SIGKILL of this process leaves behind) plus a smaller buffer pool.
 */
export function pgliteOptions(): PGliteOptions {
  keepWasmBaseline();
  return {
    startParams: [...PGlite.defaultStartParams, "-c", `shared_buffers=${SHARED_BUFFERS}`],
    // PGlite's serializers are typed to return text, but its Bind sends a byte view as a binary parameter.
    serializers: { [BYTEA_OID]: byteaParam as unknown as (x: unknown) => string },
    parsers: { [BYTEA_OID]: byteaFromHex },
  };
}

/**
 * PGlite itself, its database in `dir` opened (created when empty) exactly as the embedded
 * store opens it: the same start parameters, buffer pool, bytea codec and compiler. The
 * embedded driver runs on it; the creates bench replays our statements on it alone.
 */
export async function openPglite(dir: string): Promise<PGlite> {
  await initDatabase(dir);
  return PGlite.create(dir, pgliteOptions());
}

/** PostgreSQL's type id of bytea. */
const BYTEA_OID = 17;

/**
 * Every stored object is a bytea parameter (and a bytea column read back). PGlite passes
 * them as text in PostgreSQL's hex format, converting byte by byte through JavaScript
 * strings (Array.from(...).map(toString(16))): 6-11 µs for a 143-byte VM. A parameter is
 * instead handed to PGlite's Bind as the bytes themselves, which it sends in binary format
 * (as node-postgres does a Buffer): no hex text built, copied into the message and parsed
 * back by the engine. The database receives the same bytes.
 */
export function byteaParam(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new Error("Invalid input for bytea type");
  return value;
}

/** A bytea column as PostgreSQL prints it (hex format: `\x` then two digits a byte) into its bytes. */
export function byteaFromHex(text: string): Uint8Array {
  if (!text.startsWith("\\x")) throw new Error(`unexpected bytea text (not hex format): ${text.slice(0, 16)}`);
  const b = Buffer.from(text.slice(2), "hex");
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Creates the database files in an empty `dir` (initdb) in a short-lived child process.
 * PGlite runs initdb in a second and a third WASM instance; in this process they stayed
 * resident after it closed them (about 250 MB more than opening an existing database),
 * and a worker thread's memory stays in the allocator's arenas after the worker exits
 * (150 MB). A process gives all of it back. A directory that holds a database is left alone.
 */
export async function initDatabase(dir: string): Promise<void> {
  if (existsSync(join(dir, "PG_VERSION"))) return;
  // Plain Node, no loader: the child imports PGlite's own JavaScript by its resolved URL.
  const code = `const { PGlite } = await import(process.argv[1]); const db = await PGlite.create(process.argv[2], { startParams: JSON.parse(process.argv[3]) }); await db.close();`;
  const args = ["--input-type=module", "-e", code, import.meta.resolve("@electric-sql/pglite"), dir, JSON.stringify(pgliteOptions().startParams)];
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, args, { maxBuffer: 16 * 1024 * 1024 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`creating the embedded database failed: ${stderr.trim().split("\n").slice(-3).join(" ") || err.message}`));
      else resolve();
    });
  });
}

let baselineOnly = false;

/**
 * PGlite is the only WebAssembly in the control plane. V8 compiles it with its baseline
 * compiler (Liftoff) and then recompiles hot functions with TurboFan, keeping both: about
 * 50 MB of optimised code resident for as long as the process runs. Measured on the
 * store's own statements (inserts in transactions, pages of 100 rows), the optimised code
 * made no difference we could see: a statement's time goes to the engine's calls into
 * JavaScript and the file system. So the module stays on the baseline code. V8 reads the
 * flag when it compiles the module, which happens after this call.
 */
function keepWasmBaseline(): void {
  if (baselineOnly) return;
  baselineOnly = true;
  setFlagsFromString("--liftoff-only");
}
