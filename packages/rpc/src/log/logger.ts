import { pino, type DestinationStream } from "pino";
import { batchedStdout } from "./batched-stdout.js";

/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured logging: one JSON object per line. */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Writes JSON lines at or above `level`, formatted by pino: `{"level":"info","time":"<ISO
 * 8601>",...fields,"msg":"..."}` (the shape tests, the bench and log shippers read; a
 * bigint field is written as a string). By default to stdout, the lines of one turn of the
 * event loop in one write (batched-stdout.ts), so logging is not a syscall per RPC.
 */
export function createJsonLogger(level: LogLevel | "silent" = "info", destination: DestinationStream = batchedStdout()): Logger {
  const p = pino(
    {
      level,
      base: null,
      timestamp: isoTime,
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

let lastMs = 0;
let lastTime = "";
/** pino's isoTime, made once per millisecond: under load many lines share one, and formatting a date costs more than the rest of the line. */
function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

function bigintsAsStrings(fields: Record<string, unknown>): Record<string, unknown> {
  for (const k in fields) {
    if (typeof fields[k] === "bigint") return Object.fromEntries(Object.entries(fields).map(([key, v]) => [key, typeof v === "bigint" ? v.toString() : v]));
  }
  return fields;
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = { log() {} };
