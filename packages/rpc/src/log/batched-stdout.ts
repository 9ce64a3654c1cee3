import type { DestinationStream } from "pino";

/**
 * A pino destination that writes the lines logged in one turn of the event loop to stdout
 * in one write, and what is left when the process exits. pino's own asynchronous
 * destination (sonic-boom) measures the whole pending buffer on every line, which under
 * load cost more CPU than the RPC it logged (docs/adr/0006-*.md); stdout is synchronous for
 * files and pipes on Linux, and a syscall per RPC would cost more still.
 */
export function batchedStdout(write: (text: string) => void = (text) => void process.stdout.write(text)): DestinationStream {
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
