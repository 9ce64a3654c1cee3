import type { Collection, Resource } from "@quantix/core";
import { notFound, QuantixError } from "@quantix/core";

/**
 * Runs `fn` with a signal that aborts when `budgetMs` passes or `signal` aborts; an error
 * `fn` throws because of that abort is swallowed (the budget simply ran out).
 */
export async function withinBudget(budgetMs: number, signal: AbortSignal, fn: (stop: AbortSignal) => Promise<void>): Promise<void> {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), budgetMs);
  const onAbort = () => stop.abort();
  // A signal aborted already fires no event: the budget is spent at once.
  if (signal.aborted) stop.abort();
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
 * Waits until `pred` holds for object `id`, following its changes as the store publishes
 * them, until `budgetMs` passes or `signal` aborts; then returns the object as it is.
 * Power actions use it to return once the node has observed the result, or at the deadline.
 * It follows the one object (Collection.changesOf) rather than a watch: it wakes in the
 * write that makes `pred` hold, not a turn later after the watch's fan-out, where the
 * controllers' reconciles of the same change ran first (StartVM answered ~1 ms later).
 */
export async function waitFor<T extends Resource>(repo: Collection<T>, kind: string, id: string, pred: (obj: T) => boolean, budgetMs: number, signal: AbortSignal): Promise<T> {
  // Followed before the first read: a change between the two is not missed.
  let newest: T | undefined;
  let deletedAt: bigint | undefined;
  let reread = false;
  let wake: (() => void) | undefined;
  const unfollow = repo.changesOf(id, (ev) => {
    if (!ev) reread = true;
    else if (ev.type === "DELETED") deletedAt = ev.revision;
    else if (!newest || ev.object.resourceVersion > newest.resourceVersion) newest = ev.object;
    wake?.();
  });
  try {
    let latest = await repo.get(id);
    if (!latest) throw notFound(kind, id);
    // The newest of what was read and what was published since (a durable store's hub may lag its reads).
    const catchUp = (obj: T) => {
      if (deletedAt !== undefined && deletedAt > obj.resourceVersion) throw notFound(kind, id);
      return newest && newest.resourceVersion > obj.resourceVersion ? newest : obj;
    };
    latest = catchUp(latest);
    if (pred(latest) || budgetMs <= 0) return latest;
    // Waited without an AbortController of its own: aborting one makes a DOMException (a
    // stack trace) and dispatches an event, on every power action that waits.
    let over = signal.aborted;
    const end = () => {
      over = true;
      wake?.();
    };
    const timer = over ? undefined : setTimeout(end, budgetMs);
    if (!over) signal.addEventListener("abort", end);
    try {
      while (!over && !pred(latest)) {
        await new Promise<void>((resolve) => (wake = resolve));
        if (over) break;
        if (reread) {
          reread = false;
          const now = await repo.get(id);
          if (!now) throw notFound(kind, id);
          latest = now.resourceVersion > latest.resourceVersion ? now : latest;
        }
        latest = catchUp(latest);
      }
    } catch (err) {
      // What failed once the budget ran out only says so: the object is read as it is.
      if (!over) throw err;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", end);
    }
    return (await repo.get(id)) ?? latest;
  } finally {
    unfollow();
  }
}

/**
 * Waits until object `id` is gone from `repo` (deleted), until `budgetMs` passes or
 * `signal` aborts. Returns whether it is gone. It is waitFor with a predicate that never
 * holds: waitFor answers NOT_FOUND in the delete itself (it follows the one object).
 */
export async function waitGone<T extends Resource>(repo: Collection<T>, id: string, budgetMs: number, signal: AbortSignal): Promise<boolean> {
  try {
    await waitFor(repo, repo.kind.name, id, () => false, budgetMs, signal);
  } catch (err) {
    if (err instanceof QuantixError && err.code === "not_found") return true;
    throw err;
  }
  return (await repo.get(id)) === undefined;
}
