import { pino, type DestinationStream } from "pino";
import { batchedStdout, type BatchedDestination } from "./batched-stdout.js";

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
 * event loop in one write (batched-stdout.ts), so logging is not a syscall per RPC. To such
 * a destination lines are formatted when the batch is written, after the responses of the
 * calls they log went out (their time is still when they were logged): `fields` must not
 * change after log() was called.
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
  const later = (destination as Partial<BatchedDestination>).later?.bind(destination);
  if (!later) {
    return {
      log(lvl, msg, fields) {
        p[lvl](fields ?? {}, msg);
      },
    };
  }
  return {
    log(lvl, msg, fields) {
      if (!p.isLevelEnabled(lvl)) return;
      const at = Date.now();
      later(() => {
        loggedAt = at;
        p[lvl](fields ?? {}, msg);
      });
    },
  };
}

/** When the line being formatted was logged (a deferred one), read once by isoTime; 0 for now. */
let loggedAt = 0;

let lastMs = 0;
let lastTime = "";
/** pino's isoTime, made once per millisecond: under load many lines share one, and formatting a date costs more than the rest of the line. */
function isoTime(): string {
  const now = loggedAt || Date.now();
  loggedAt = 0;
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
