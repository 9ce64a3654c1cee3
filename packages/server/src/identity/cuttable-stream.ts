import { isPushIterable, PushIterable } from "@quantix/core";

/** Ends a stream from outside with an error (a revoked token's open watch). */
export type Cut = (err: Error) => void;

/**
 * A response stream that `onCut`'s function fails with an error at any time: a pushed
 * stream (the gRPC fast path's watches) stays pushed, a pulled one (the Connect router)
 * stops waiting for its source. `register` is given the cut function and returns what
 * unregisters it, called once the stream is over.
 */
export function cuttable<T>(source: AsyncIterable<T>, register: (cut: Cut) => () => void): AsyncIterable<T> {
  if (isPushIterable(source)) {
    return new PushIterable<T>((sink) => {
      let over = false;
      let unregister: () => void = () => undefined;
      const finish = () => {
        over = true;
        unregister();
      };
      const stop = source.pipe({
        // Passed through: a cut stops the source before failing the consumer, which ignores what comes after (PushSink).
        push: sink.push,
        ...(sink.delivered ? { delivered: sink.delivered } : {}),
        fail: (err) => {
          if (over) return;
          finish();
          sink.fail(err);
        },
        end: () => {
          if (over) return;
          finish();
          sink.end();
        },
      });
      unregister = register((err) => {
        if (over) return;
        finish();
        stop(err);
        sink.fail(err);
      });
      return (reason) => {
        finish();
        stop(reason);
      };
    });
  }
  return pulled(source, register);
}

async function* pulled<T>(source: AsyncIterable<T>, register: (cut: Cut) => () => void): AsyncGenerator<T> {
  let cutWith: ((err: Error) => void) | undefined;
  const cutPromise = new Promise<never>((_, reject) => (cutWith = reject));
  cutPromise.catch(() => undefined);
  const unregister = register((err) => cutWith!(err));
  const it = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const r = await Promise.race([it.next(), cutPromise]);
      if (r.done) return;
      yield r.value;
    }
  } finally {
    unregister();
    // Not awaited: a source waiting for its next change ends when the call's signal aborts.
    void it.return?.()?.catch(() => undefined);
  }
}
