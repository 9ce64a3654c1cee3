import { Code, ConnectError } from "@connectrpc/connect";
import { isPushIterable, type PushIterable } from "@quantix/core";
import { CANCELED } from "./grpc-wire.js";

/** Where a response stream's envelopes go: an HTTP/2 stream, or an HTTP/1.1 response (chunked). */
export interface Sink {
  /** False once the bytes waiting to go out reach the stream's high-water mark (as Writable.write). */
  write(bytes: Uint8Array): boolean;
  readonly writableLength: number;
  readonly writableNeedDrain: boolean;
  readonly destroyed: boolean;
  on(event: "close" | "drain", listener: () => void): unknown;
  once(event: "close" | "drain", listener: () => void): unknown;
  off(event: "close" | "drain", listener: () => void): unknown;
}

/** One message as the wire carries it (an envelope), refused (thrown) when too large. */
export type Encode = (msg: object) => Uint8Array;

/** A watcher whose client lets more than this many bytes pile up is cut off (it can resume). */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
const SLOW_CLIENT_GRACE_MS = 10_000;
/** A pulled source's messages of one turn are written together up to this many bytes. */
const MAX_BATCH_BYTES = 64 * 1024;
/**
 * The bytes of frozen batches of frozen messages (a fan-out's shared updates,
 * watch-filter.ts), with the encoder that made them: ten thousand watchers of one
 * change are handed the same batch, which is encoded and joined once.
 */
const batchBytes = new WeakMap<readonly unknown[], { readonly encode: Encode; readonly bytes: Uint8Array }>();

/**
 * Writes a response stream's messages until it ends; rejects with what it failed with,
 * or with why the writing stopped (the client went away, read too slowly, or a message
 * was too large), which the stream (and so every interceptor watching it) is told too.
 * A push source (a watch) writes each batch it is handed as one write, from the fan-out
 * itself; any other source is pulled, and the messages it yields in one turn of the
 * event loop go out as one write.
 */
export function pump(stream: Sink, source: AsyncIterable<unknown>, encode: Encode): Promise<void> {
  return isPushIterable(source) ? piped(stream, source, encode) : pulled(stream, source, encode);
}

function piped(stream: Sink, source: PushIterable<unknown>, encode: Encode): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let stop: ((reason?: unknown) => void) | undefined;
    /** Since when more than MAX_BUFFERED_BYTES have been waiting for the client, if they are. */
    let overSince: number | undefined;
    /** Ends the call: `ended` when the source ended or failed, else `err` is why the writer stopped it. */
    const settle = (err: unknown, ended: boolean) => {
      if (settled) return;
      settled = true;
      stream.off("close", onClose);
      if (err === undefined) resolve();
      else reject(err);
      // A source that ended is stopped too (it releases what it holds); one the writer gives up on learns why.
      stop?.(ended ? undefined : err);
    };
    const onClose = () => settle(CANCELED, false);
    stream.once("close", onClose);
    /** Messages written, for the layers that count them (PushSink.delivered: the RPC's log line). */
    let written = 0;
    stop = source.pipe({
      // A fan-out calls this once per watcher, with the batch every watcher of its query
      // shares: the layers in between hand it on (PushSink), and the bytes are made once.
      push: (msgs) => {
        if (settled || stream.destroyed) return;
        let bytes;
        try {
          bytes = bytesOf(msgs, encode);
        } catch (err) {
          settle(err, false);
          return;
        }
        written += msgs.length;
        // A large snapshot may take a while to drain; a client that stays behind is cut off.
        // write() is true while less than the high-water mark waits, far below the limit.
        if (stream.write(bytes) || stream.writableLength <= MAX_BUFFERED_BYTES) overSince = undefined;
        else if ((overSince ??= Date.now()) + SLOW_CLIENT_GRACE_MS < Date.now()) {
          settle(new ConnectError(`the client reads too slowly: more than ${MAX_BUFFERED_BYTES} bytes have waited for ${SLOW_CLIENT_GRACE_MS / 1000} s; resume from the last resource_version received`, Code.ResourceExhausted), false);
        }
      },
      delivered: () => written,
      fail: (err) => settle(err ?? new Error("stream failed"), true),
      end: () => settle(undefined, true),
    });
    // The source may have ended, or the client gone, while pipe() ran.
    if (settled) stop();
  });
}

/**
 * The last shared batch written and its bytes: a fan-out hands the same frozen batch to
 * every watcher of a query, one after the other, so this answers all but the first
 * without a look-up in a map.
 */
let lastBatch: readonly unknown[] | undefined;
let lastEncode: Encode | undefined;
let lastBytes: Uint8Array | undefined;

/** One write's bytes for a batch of messages (a frozen batch of frozen ones encoded once per encoder). */
function bytesOf(msgs: readonly unknown[], encode: Encode): Uint8Array {
  if (msgs === lastBatch && encode === lastEncode) return lastBytes!;
  const bytes = encodeBatch(msgs, encode);
  // Only a frozen batch (of frozen messages: watch-filter.ts freezes both) can be remembered by identity.
  if (Object.isFrozen(msgs) && msgs.every((m) => Object.isFrozen(m))) {
    lastBatch = msgs;
    lastEncode = encode;
    lastBytes = bytes;
  }
  return bytes;
}

function encodeBatch(msgs: readonly unknown[], encode: Encode): Uint8Array {
  if (msgs.length === 1) return encode(msgs[0] as object);
  const shared = Object.isFrozen(msgs);
  const cached = shared ? batchBytes.get(msgs) : undefined;
  if (cached?.encode === encode) return cached.bytes;
  const bytes = Buffer.concat(msgs.map((m) => encode(m as object)));
  if (shared && msgs.every((m) => Object.isFrozen(m))) batchBytes.set(msgs, { encode, bytes });
  return bytes;
}

async function pulled(stream: Sink, source: AsyncIterable<unknown>, encode: Encode): Promise<void> {
  const it = source[Symbol.asyncIterator]();
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0 || stream.destroyed) return;
    const batch = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    stream.write(batch);
  };
  for (;;) {
    let r;
    try {
      r = await it.next();
    } catch (err) {
      // What the source yielded before it failed goes out before the failure (the status after it).
      flush();
      throw err;
    }
    if (r.done) break;
    let frame;
    try {
      if (stream.destroyed) throw CANCELED;
      frame = encode(r.value as object);
    } catch (err) {
      // Tell the source (and the interceptors wrapping it) why it is stopped, as connect's router does.
      await (it.throw ? it.throw(err) : it.return?.())?.catch(() => undefined);
      flush();
      throw err;
    }
    pending.push(frame);
    pendingBytes += frame.byteLength;
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
    // A source that yields without waiting (in one turn) is written once a batch is large,
    // so that the stream's buffer fills and "drain" holds the source back.
    if (pendingBytes >= MAX_BATCH_BYTES) flush();
    if (stream.writableNeedDrain) {
      flush();
      await drained(stream);
    }
  }
  flush();
}

function drained(stream: Sink): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
