import { rename, writeFile } from "node:fs/promises";

/**
 * Replaces the file at `path` with `content`, readable by this user only, atomically: the
 * content is written to `tmp` beside it, then renamed over it, so a crash leaves the old
 * file or the new one, never part of either. Several writers of one file need distinct
 * `tmp` names.
 */
export async function replacePrivateFile(path: string, content: string, tmp = `${path}.tmp`): Promise<void> {
  await writeFile(tmp, content, { mode: 0o600 });
  await rename(tmp, path);
}

/** Runs async calls one at a time, in the order they were made; a failed call does not stop the next. */
export class SerialQueue {
  private chain: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }
}
