/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured logging: one JSON object per line. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Writes JSON lines at or above `level` to `write` (stdout by default). */
export function createJsonLogger(level: LogLevel | "silent" = "info", write: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  const min = level === "silent" ? Infinity : ORDER[level];
  return {
    log(lvl, msg, fields) {
      if (ORDER[lvl] < min) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }, bigintReplacer)}\n`);
    },
  };
}

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = { log() {} };
