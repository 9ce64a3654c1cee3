import { pino, type DestinationStream } from "pino";

/**
 * A pino destination that writes the lines logged in one turn of the event loop to stdout
 * in one synchronous write (pino's synchronous destination, which also finishes a write
 * a full pipe cut short), and what is left when the process exits: nothing logged is
 * lost, not even just before process.exit. pino's asynchronous destination measures its
 * whole pending buffer on every line, which under load cost more CPU than the RPC it
 * logged (docs/adr/0006-*.md); a syscall per line would cost more still.
 */
export function batchedStdout(write: (text: string) => void = stdoutWriter()): DestinationStream {
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const text = pending.join("");
    pending = [];
    write(text);
  };
  process.once("exit", flush);
  return {
    write(line: string) {
      if (pending.length === 0) setImmediate(flush);
      pending.push(line);
      if (pending.length >= 1024) flush();
    },
  };
}

function stdoutWriter(): (text: string) => void {
  let out: DestinationStream | undefined;
  return (text) => (out ??= pino.destination({ dest: 1, sync: true })).write(text);
}
