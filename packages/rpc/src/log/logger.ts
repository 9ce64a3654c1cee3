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
        const line = fields && plainLine(lvl, msg, fields);
        if (line !== undefined) {
          destination.write(line);
          return;
        }
        // plainLine may have read the time (isoTime clears loggedAt): pino reads it again.
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

/**
 * The line pino writes for a line whose every key and string needs no escaping (printable
 * ASCII without `"` or a backslash), and whose values are those strings, finite numbers and
 * booleans (an RPC's line: procedure, code, duration, ids), made without pino: its
 * formatting was a third of a unary call's logging (~1 KB of strings a line). Undefined for
 * any other line, which pino formats: one holding an object, a bigint, an error (`err`),
 * or a string JSON must escape.
 */
function plainLine(level: LogLevel, msg: string, fields: Record<string, unknown>): string | undefined {
  if (!plain(msg)) return undefined;
  let out = `{"level":"${level}"${isoTime()}`;
  for (const k in fields) {
    if (!Object.hasOwn(fields, k)) continue;
    const v = fields[k];
    if (v === undefined) continue;
    if (k === "err" || !plain(k)) return undefined;
    if (typeof v === "string") {
      if (!plain(v)) return undefined;
      out += `,"${k}":"${v}"`;
    } else if ((typeof v === "number" && Number.isFinite(v)) || typeof v === "boolean") {
      out += `,"${k}":${v}`;
    } else {
      return undefined;
    }
  }
  return `${out},"msg":"${msg}"}\n`;
}

/** Whether JSON writes `s` as it is between quotes (pino's asString and JSON.stringify alike). */
function plain(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

function bigintsAsStrings(fields: Record<string, unknown>): Record<string, unknown> {
  for (const k in fields) {
    if (typeof fields[k] === "bigint") return Object.fromEntries(Object.entries(fields).map(([key, v]) => [key, typeof v === "bigint" ? v.toString() : v]));
  }
  return fields;
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = { log() {} };
