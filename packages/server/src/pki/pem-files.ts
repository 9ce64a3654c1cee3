import { chmod, mkdir, open } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { QuantixError } from "@quantix/core";

/**
 * Writes PEM files into `dir` (made 0700 if missing): keys 0600, certificates 0644. An
 * existing file is never replaced unless `force`: each is created exclusively (O_EXCL), so
 * a key is not overwritten by a second `ca init` run by mistake. All names are checked
 * before anything is written. Returns the absolute paths written.
 */
export async function writePemFiles(dir: string, files: readonly { name: string; pem: string; secret: boolean }[], force: boolean): Promise<string[]> {
  const root = resolve(dir);
  await mkdir(root, { recursive: true, mode: 0o700 });
  const targets = files.map((f) => ({ ...f, path: join(root, f.name) }));
  if (!force) {
    for (const t of targets) {
      const h = await open(t.path, "r").catch(() => undefined);
      if (h) {
        await h.close();
        throw new QuantixError("already_exists", `${t.path} exists; nothing was written (pass --force to replace it)`);
      }
    }
  }
  for (const t of targets) {
    const mode = t.secret ? 0o600 : 0o644;
    const h = await open(t.path, force ? "w" : "wx", mode);
    try {
      await h.writeFile(t.pem);
      await h.sync();
    } finally {
      await h.close();
    }
    // An existing file replaced with --force keeps its old mode otherwise.
    await chmod(t.path, mode);
  }
  return targets.map((t) => t.path);
}

/** A directory argument: a path without control characters. */
export function checkDir(flag: string, dir: string | undefined): string {
  if (dir === undefined || dir === "") throw new QuantixError("invalid_argument", `${flag} <directory> is required`);
  if (/[\u0000-\u001f]/.test(dir)) throw new QuantixError("invalid_argument", `${flag} must be a directory path without control characters`);
  return isAbsolute(dir) ? dir : resolve(dir);
}
