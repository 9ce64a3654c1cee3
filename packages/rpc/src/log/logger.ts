/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured logging: one JSON object per line. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * Writes JSON lines at or above `level` to `write` (stdout by default). Lines logged in
 * one turn of the event loop go out in one write: stdout is synchronous for files and
 * pipes on Linux, and a syscall per RPC would cost more than the RPC.
 */
export function createJsonLogger(level: LogLevel | "silent" = "info", write: (text: string) => void = stdoutWrite): Logger {
  const min = level === "silent" ? Infinity : ORDER[level];
  let pending: string[] = [];
  const flush = () => {
    if (pending.length === 0) return;
    const text = pending.join("");
    pending = [];
    write(text);
  };
  process.once("exit", flush);
  return {
    log(lvl, msg, fields) {
      if (ORDER[lvl] < min) return;
      if (pending.length === 0) setImmediate(flush);
      pending.push(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }, bigintReplacer)}\n`);
      if (pending.length >= 1024) flush();
    },
  };
}

function stdoutWrite(text: string): void {
  process.stdout.write(text);
}

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = { log() {} };
