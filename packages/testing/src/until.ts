/**
 * Polls `probe` until it returns a value other than undefined, or fails after
 * `timeoutMs` with the last error or value it saw. Tests poll state; they never sleep
 * a fixed time.
 */
export async function until<T>(probe: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Collects items from an async iterable until `done` says so, failing after `timeoutMs`. */
export async function collect<T>(source: AsyncIterable<T>, done: (items: T[]) => boolean, timeoutMs = 10_000): Promise<T[]> {
  const items: T[] = [];
  const it = source[Symbol.asyncIterator]();
  const deadline = Date.now() + timeoutMs;
  while (!done(items)) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error(`timed out after ${timeoutMs} ms with ${items.length} items`);
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms with ${items.length} items`)), remaining))),
    ]).finally(() => clearTimeout(timer));
    if (next.done) break;
    items.push(next.value);
  }
  return items;
}
