import type { Collection, Resource } from "@quantix/core";
import { notFound } from "@quantix/core";

/**
 * Waits until `pred` holds for object `id`, following the store's watch, until
 * `budgetMs` passes or `signal` aborts; then returns the object as it is. Power actions
 * use it to return once the node has observed the result, or at the deadline.
 */
export async function waitFor<T extends Resource>(
  repo: Collection<T>,
  kind: string,
  id: string,
  pred: (obj: T) => boolean,
  budgetMs: number,
  signal: AbortSignal,
): Promise<T> {
  let latest = await repo.get(id);
  if (!latest) throw notFound(kind, id);
  if (pred(latest) || budgetMs <= 0) return latest;
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), budgetMs);
  const onAbort = () => stop.abort();
  signal.addEventListener("abort", onAbort);
  try {
    for await (const ev of repo.watch(latest.resourceVersion, stop.signal)) {
      if (ev.type === "SYNCED" || ev.object.id !== id) continue;
      if (ev.type === "DELETED") throw notFound(kind, id);
      latest = ev.object;
      if (pred(latest)) break;
    }
  } catch (err) {
    if (!stop.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
    stop.abort();
  }
  return (await repo.get(id)) ?? latest;
}
