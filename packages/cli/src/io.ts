import type { Readable, Writable } from "node:stream";
import type { Env } from "./config.js";

/** Where a run of the CLI reads and writes: the process's streams, or a test's. */
export interface Io {
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly stdin?: Readable;
  readonly env: Env;
  /** Ends --watch and streams (Ctrl-C in the real process). */
  readonly signal?: AbortSignal;
}

export const write = (s: Writable, text: string) => {
  s.write(text.endsWith("\n") || text === "" ? text : `${text}\n`);
};

/** The first line of stdin (a password piped in), without its newline. */
export async function readLine(stdin: Readable | undefined): Promise<string> {
  if (!stdin) return "";
  let buf = "";
  for await (const chunk of stdin) {
    buf += typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8");
    const nl = buf.indexOf("\n");
    if (nl >= 0) return buf.slice(0, nl).replace(/\r$/, "");
  }
  return buf.replace(/\r?\n$/, "");
}

/** Asks for a secret on a terminal without echoing it. */
export async function promptSecret(io: Io, prompt: string): Promise<string> {
  const stdin = io.stdin as (Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => void }) | undefined;
  if (!stdin?.isTTY || !stdin.setRawMode) return readLine(stdin);
  io.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let s = "";
      const onData = (d: Buffer) => {
        for (const ch of d.toString("utf8")) {
          if (ch === "\r" || ch === "\n") {
            stdin.off("data", onData);
            io.stderr.write("\n");
            return resolve(s);
          }
          if (ch === "\u0003") {
            stdin.off("data", onData);
            return reject(new Error("interrupted"));
          }
          if (ch === "\u007f" || ch === "\b") s = s.slice(0, -1);
          else s += ch;
        }
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}
