import { pino, type DestinationStream } from "pino";

/**
 * A destination that may also be handed lines to format later (`later`): a logger that
 * finds it formats its lines when the batch is written, not when they are logged.
 */
export interface BatchedDestination extends DestinationStream {
  /** Runs `format` (which writes its line to this destination) just before the batch is written. */
  later(format: () => void): void;
}

/**
 * A pino destination that writes the lines logged in one turn of the event loop to stdout
 * in one synchronous write (pino's synchronous destination, which also finishes a write
 * a full pipe cut short), and what is left when the process exits: nothing logged is
 * lost, not even just before process.exit. pino's asynchronous destination measures its
 * whole pending buffer on every line, which under load cost more CPU than the RPC it
 * logged (docs/adr/0006-*.md); a syscall per line would cost more still.
 *
 * The batch is written one turn later than it was logged: a unary call's log line is
 * logged before its response is written, and Node sends a response's trailers (the end
 * of a gRPC call) from an immediate of its own and the next turn's write; writing the
 * batch in the same turn put the line's formatting and the write syscall between a
 * call's data and its trailers, on the client's wait (issue 19, docs/adr/0003-*.md).
 */
export function batchedStdout(write: (text: string) => void = stdoutWriter()): BatchedDestination {
  let pending: string[] = [];
  let formats: (() => void)[] = [];
  /** Lines and formats since the last write. */
  let count = 0;
  let formatting = false;
  const flush = () => {
    const f = formats;
    formats = [];
    count = 0;
    formatting = true;
    try {
      for (let i = 0; i < f.length; i++) f[i]!();
    } finally {
      formatting = false;
    }
    if (pending.length === 0) return;
    const text = pending.join("");
    pending = [];
    write(text);
  };
  const flushNextTurn = () => setImmediate(flush);
  const added = () => {
    if (count++ === 0) setImmediate(flushNextTurn);
    if (count >= 1024) flush();
  };
  process.once("exit", flush);
  return {
    write(line: string) {
      pending.push(line);
      // The lines of the formats run by flush are written by it.
      if (!formatting) added();
    },
    later(format: () => void) {
      formats.push(format);
      added();
    },
  };
}

function stdoutWriter(): (text: string) => void {
  let out: DestinationStream | undefined;
  return (text) => (out ??= pino.destination({ dest: 1, sync: true })).write(text);
}
