import { pino, type DestinationStream } from "pino";

/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured logging: one JSON object per line. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Writes JSON lines at or above `level`, through pino: `{"level":"info","time":"<ISO
 * 8601>",...fields,"msg":"..."}` (the shape tests, the bench and log shippers read; a
 * bigint field is written as a string). By default to stdout through pino's asynchronous
 * destination: while one write is in flight the next lines gather in its buffer and go out
 * together, so under load logging costs far fewer syscalls than RPCs (stdout is synchronous
 * for files and pipes on Linux, and a syscall per RPC would cost more than the RPC); what is
 * buffered is flushed when the process exits.
 */
export function createJsonLogger(level: LogLevel | "silent" = "info", destination: DestinationStream = pino.destination({ dest: 1, sync: false })): Logger {
  const p = pino(
    {
      level,
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: bigintsAsStrings },
    },
    destination,
  );
  return {
    log(lvl, msg, fields) {
      p[lvl](fields ?? {}, msg);
    },
  };
}

function bigintsAsStrings(fields: Record<string, unknown>): Record<string, unknown> {
  for (const k in fields) {
    if (typeof fields[k] === "bigint") return Object.fromEntries(Object.entries(fields).map(([key, v]) => [key, typeof v === "bigint" ? v.toString() : v]));
  }
  return fields;
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = { log() {} };
