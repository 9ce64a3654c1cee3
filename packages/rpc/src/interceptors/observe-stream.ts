import { Code, ConnectError } from "@connectrpc/connect";
import { isPushIterable, PushIterable, type PushSink, type StopPush } from "@quantix/core";

/** What a wrapper around a response stream is told, and the one thing it may change. */
export interface StreamHooks {
  /** The consumer began to read (pull) or to pipe (push). */
  readonly opened?: () => void;
  /**
   * `n` more messages went to the consumer. Piped to a consumer that counts what it takes
   * (PushSink.delivered: the RPC pumps), told once with the total just before `ended`, so
   * that the source pushes straight to the consumer with no call of this layer per batch.
   */
  readonly delivered?: (n: number) => void;
  /**
   * Decides how the stream ends: given `undefined` when the source ended, returns
   * `undefined` to end it or an error to fail it with (a passed deadline turns an ending
   * into DEADLINE_EXCEEDED); given the error the source failed with, returns the error to
   * pass on (error mapping). A failure cannot be turned into an ending.
   */
  readonly settle?: (err: unknown) => unknown;
  /**
   * The stream is over, called once: `undefined` when it ended, else what it failed
   * with (after `settle`) or the reason its consumer stopped it.
   */
  readonly ended?: (reason: unknown) => void;
}

/** The reason recorded when a consumer stops a stream without saying why. */
export const STOPPED_BY_CONSUMER = new ConnectError("the client cancelled the call", Code.Canceled);

/**
 * Wraps a response stream so an interceptor sees every message and how the stream
 * ended, without losing push: a PushIterable stays one, so the gRPC fast path still
 * writes a watch's batches straight from the fan-out (docs/adr/0003-*.md).
 */
export function observeStream<T>(source: AsyncIterable<T>, hooks: StreamHooks): AsyncIterable<T> {
  return isPushIterable(source) ? new ObservedPush(source, hooks) : observePulled(source, hooks);
}

/** A pushable stream seen through hooks; pulled, it pulls its source (keeping the source's own backlog limit). */
class ObservedPush<T> extends PushIterable<T> {
  constructor(
    private readonly source: PushIterable<T>,
    private readonly hooks: StreamHooks,
  ) {
    super((sink) => pipeObserved(source, sink, hooks));
  }

  override [Symbol.asyncIterator](): AsyncIterator<T> {
    return observePulled(this.source, this.hooks);
  }
}

function pipeObserved<T>(source: PushIterable<T>, sink: PushSink<T>, h: StreamHooks): StopPush {
  let over = false;
  const count = h.delivered && sink.delivered;
  const end = (reason: unknown): boolean => {
    if (over) return false;
    over = true;
    if (count) h.delivered!(count());
    h.ended?.(reason);
    return true;
  };
  const settled = (err: unknown): unknown => (h.settle ? h.settle(err) : err);
  h.opened?.();
  // Items pass through unchanged: unless this layer must count them itself, the source
  // pushes to the consumer directly (PushSink: the consumer ignores pushes after it stopped).
  const delivered = h.delivered;
  const push: PushSink<T>["push"] =
    delivered && !count
      ? (items) => {
          if (over) return;
          delivered(items.length);
          sink.push(items);
        }
      : sink.push;
  const stop = source.pipe({
    push,
    ...(sink.delivered ? { delivered: sink.delivered } : {}),
    fail: (err) => {
      const e = settled(err) ?? err;
      if (end(e)) sink.fail(e);
    },
    end: () => {
      const e = settled(undefined);
      if (!end(e)) return;
      if (e === undefined) sink.end();
      else sink.fail(e);
    },
  });
  return (reason) => {
    end(reason ?? STOPPED_BY_CONSUMER);
    stop(reason);
  };
}

async function* observePulled<T>(source: AsyncIterable<T>, h: StreamHooks): AsyncGenerator<T> {
  // Unless the source ends or fails, the consumer stopped early (return(), or throw() with its reason).
  let reason: unknown = STOPPED_BY_CONSUMER;
  h.opened?.();
  try {
    for await (const m of source) {
      h.delivered?.(1);
      yield m;
    }
    reason = h.settle ? h.settle(undefined) : undefined;
  } catch (err) {
    reason = (h.settle ? h.settle(err) : err) ?? err;
  } finally {
    h.ended?.(reason);
  }
  if (reason !== undefined) throw reason;
}
