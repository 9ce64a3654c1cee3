import type { Collection, Resource } from "@quantix/core";
import { notFound } from "@quantix/core";

/**
 * Runs `fn` with a signal that aborts when `budgetMs` passes or `signal` aborts; an error
 * `fn` throws because of that abort is swallowed (the budget simply ran out).
 */
export async function withinBudget(budgetMs: number, signal: AbortSignal, fn: (stop: AbortSignal) => Promise<void>): Promise<void> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), budgetMs);
  const onAbort = () => stop.abort();
  signal.addEventListener("abort", onAbort);
  try {
    await fn(stop.signal);
  } catch (err) {
    if (!stop.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
    stop.abort();
  }
}

/**
 * Waits until `pred` holds for object `id`, following the store's watch, until
 * `budgetMs` passes or `signal` aborts; then returns the object as it is. Power actions
 * use it to return once the node has observed the result, or at the deadline.
 */
export async function waitFor<T extends Resource>(repo: Collection<T>, kind: string, id: string, pred: (obj: T) => boolean, budgetMs: number, signal: AbortSignal): Promise<T> {
  let latest = await repo.get(id);
  if (!latest) throw notFound(kind, id);
  if (pred(latest) || budgetMs <= 0) return latest;
  const from = latest.resourceVersion;
  await withinBudget(budgetMs, signal, async (stop) => {
    for await (const ev of repo.watch(from, stop)) {
      if (ev.type === "SYNCED" || ev.object.id !== id) continue;
      if (ev.type === "DELETED") throw notFound(kind, id);
      latest = ev.object;
      if (pred(latest)) return;
    }
  });
  return (await repo.get(id)) ?? latest;
}

/**
 * Waits until object `id` is gone from `repo` (deleted), following its watch, until
 * `budgetMs` passes or `signal` aborts. Returns whether it is gone.
 */
export async function waitGone<T extends Resource>(repo: Collection<T>, id: string, budgetMs: number, signal: AbortSignal): Promise<boolean> {
  const now = await repo.get(id);
  if (!now) return true;
  if (budgetMs <= 0) return false;
  let gone = false;
  await withinBudget(budgetMs, signal, async (stop) => {
    for await (const ev of repo.watch(now.resourceVersion, stop)) {
      if (ev.type === "DELETED" && ev.object.id === id) {
        gone = true;
        return;
      }
    }
  });
  return gone || (await repo.get(id)) === undefined;
}
