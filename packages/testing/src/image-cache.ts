import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { isProcessAlive } from "@quantix/agent";

/**
 * A machine-wide cache of built test images: `<root>/<key>/`, built once. The entry is
 * built in a temp directory beside it and renamed into place, so nobody ever sees half
 * of one; a lock file (`<key>.lock`, holding the builder's pid) makes a second test
 * process wait for the first instead of building too. A lock whose process is gone
 * (a build killed half-way) is taken over, and its leftover temp directory removed,
 * after what the dead build still held there is released (mounts, loop devices).
 */

/** Where built images are kept: `$QUANTIX_IMAGE_CACHE`, else `~/.cache/quantix/images`. */
export function imageCacheRoot(): string {
  return process.env["QUANTIX_IMAGE_CACHE"] || path.join(os.homedir(), ".cache", "quantix", "images");
}

/** How to wait for another process's build, and where progress goes. */
export interface CacheOptions {
  /** Gives up waiting for another process's build after this long. */
  readonly waitMs?: number;
  readonly log?: (line: string) => void;
}

/** Returns `<root>/<key>`, running `build` into a fresh directory first when it is absent. */
export async function cachedEntry(root: string, key: string, build: (dir: string) => Promise<void>, options: CacheOptions = {}): Promise<string> {
  const final = path.join(root, key);
  if (existsSync(final)) return final;
  await mkdir(root, { recursive: true });
  const lock = path.join(root, `${key}.lock`);
  const log = options.log ?? (() => {});
  const deadline = Date.now() + (options.waitMs ?? 60 * 60_000);
  let waiting = false;
  while (!(await tryLock(lock))) {
    if (existsSync(final)) return final;
    if (Date.now() > deadline) throw new Error(`timed out waiting for another process to build ${final} (lock ${lock})`);
    if (!waiting) log(`another process (lock ${lock}) is building ${key}; waiting for it`);
    waiting = true;
    await new Promise((r) => setTimeout(r, 2_000));
  }
  try {
    if (existsSync(final)) return final;
    for (const e of await readdir(root)) {
      if (!e.startsWith(`.${key}-`)) continue;
      const leftover = path.join(root, e);
      log(`removing ${leftover}, left by a build that did not finish`);
      await releaseMountsAndLoops(leftover);
      await rm(leftover, { recursive: true, force: true });
    }
    const tmp = await mkdtemp(path.join(root, `.${key}-`));
    try {
      await build(tmp);
      await rename(tmp, final);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return final;
  } finally {
    await rm(lock, { force: true });
  }
}

/** Takes the lock file, or takes over one whose owner is no longer running; false when a live process holds it. */
async function tryLock(lock: string): Promise<boolean> {
  try {
    const handle = await open(lock, "wx");
    await handle.writeFile(`${process.pid}\n`);
    await handle.close();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const owner = Number((await readFile(lock, "utf8").catch(() => "")).trim());
  // An empty file is a lock being written this instant, unless it is old (its writer died between open and write).
  const young = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? 0) < 30_000;
  if (Number.isInteger(owner) && owner > 0 ? isProcessAlive(owner) : young) return false;
  await rm(lock, { force: true });
  return false;
}

/**
 * Unmounts whatever is mounted below `dir` (deepest first: a chroot's /proc inside its
 * root) and detaches the loop devices whose backing file is below it. Removing the tree
 * first would follow the mounts: into the chroot's /dev, for one.
 */
export async function releaseMountsAndLoops(dir: string): Promise<void> {
  const run = promisify(execFile);
  const inside = (p: string) => p === dir || p.startsWith(`${dir}/`);
  // mountinfo's fifth field is the mount point, with space, tab, newline and backslash octal-escaped.
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const points = mountinfo.split("\n").map((l) => l.split(" ")[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))).filter((p): p is string => p !== undefined && inside(p));
  for (const p of points.sort((a, b) => b.length - a.length)) await run("umount", ["--lazy", p]).catch(() => {});
  const loops = await run("losetup", ["--list", "--json"]).then((r) => (JSON.parse(r.stdout || "{}") as { loopdevices?: { name: string; "back-file"?: string }[] }).loopdevices ?? [], () => []);
  for (const l of loops) if (l["back-file"] && inside(l["back-file"].replace(/ \(deleted\)$/, ""))) await run("losetup", ["--detach", l.name]).catch(() => {});
}
