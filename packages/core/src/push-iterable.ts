import { QuantixError } from "./errors.js";

/**
 * Receives batches of items pushed by a source, then its end or failure. Its functions
 * are called as plain functions (they do not use `this`), so a layer that passes items
 * on unchanged hands its consumer's `push` itself to its source: a fan-out then calls
 * the consumer (an RPC's pump) directly, one call per watcher rather than one per layer.
 * The consumer ignores what comes after it stopped (a layer between need not check).
 */
export interface PushSink<T> {
  push(items: readonly T[]): void;
  fail(err: unknown): void;
  end(): void;
  /**
   * How many items the consumer has taken so far, when it counts them itself (the RPC
   * pumps do): a layer that wants the count reads it here (and hands it on) instead of
   * wrapping `push` to count.
   */
  readonly delivered?: () => number;
}

/**
 * Stops a piped source. A consumer that gives up (its client went away, it fell behind)
 * may say why, so that layers in between (an RPC's log line) record the reason.
 */
export type StopPush = (reason?: unknown) => void;

/**
 * A stream of items that a consumer can either pull (`for await`) or have pushed to it
 * (`pipe`). Pushing skips a promise and a microtask per item and per layer, which is
 * what lets one change reach ten thousand watchers quickly; pulling is what everything
 * else (the Connect router, controllers, tests) uses.
 */
export class PushIterable<T> implements AsyncIterable<T> {
  /**
   * @param start begins producing into the sink; returns a function that stops it.
   * @param maxBacklog items a pulling consumer may leave unread before it is cut off.
   */
  constructor(
    private readonly start: (sink: PushSink<T>) => StopPush,
    private readonly maxBacklog = 100_000,
  ) {}

  /** Pushes every item to `sink` until the source ends or fails; returns a function that stops it. */
  pipe(sink: PushSink<T>): StopPush {
    return this.start(sink);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    let queue: T[] = [];
    let done = false;
    let failure: unknown;
    let wake: (() => void) | undefined;
    let index = 0;
    const stop = this.start({
      push: (items) => {
        if (done) return;
        const room = this.maxBacklog - (queue.length - index);
        for (let i = 0; i < Math.min(room, items.length); i++) queue.push(items[i]!);
        if (items.length > room) {
          // What fits is still delivered; then the consumer learns it fell behind.
          failure = new QuantixError("resource_exhausted", `the watcher fell more than ${this.maxBacklog} changes behind; resume from the last resource_version received`);
          done = true;
        }
        wake?.();
      },
      fail: (err) => {
        if (done) return;
        failure = err;
        done = true;
        wake?.();
      },
      end: () => {
        done = true;
        wake?.();
      },
    });
    return {
      next: async (): Promise<IteratorResult<T>> => {
        for (;;) {
          if (index < queue.length) {
            const value = queue[index++]!;
            if (index === queue.length) {
              queue = [];
              index = 0;
            }
            return { value, done: false };
          }
          if (done) {
            stop();
            if (failure !== undefined) {
              const f = failure;
              failure = undefined;
              throw f;
            }
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      },
      return: async (): Promise<IteratorResult<T>> => {
        done = true;
        wake?.();
        stop();
        return { value: undefined, done: true };
      },
    };
  }
}

/** Whether an iterable can push (see PushIterable). */
export function isPushIterable<T>(x: AsyncIterable<T>): x is PushIterable<T> {
  return x instanceof PushIterable;
}

/** Each item of a push source mapped by `fn`, still pushed (the same backlog bound). */
export function mapPush<T, U>(source: PushIterable<T>, fn: (item: T) => U, maxBacklog?: number): PushIterable<U> {
  return new PushIterable<U>(
    (sink) =>
      source.pipe({
        push: (items) => sink.push(items.map(fn)),
        fail: (err) => sink.fail(err),
        end: () => sink.end(),
      }),
    maxBacklog,
  );
}
