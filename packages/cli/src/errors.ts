import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, QuotaFailureSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";

/**
 * Exit codes scripts can rely on (docs/cli.md). Kept in one place so the docs and the
 * code cannot drift: output.test.ts checks docs/cli.md lists exactly these (and 130).
 */
export const EXIT = {
  OK: 0,
  /** The server failed (INTERNAL, UNKNOWN, ...), or another unexpected error. */
  ERROR: 1,
  /** Bad usage: an unknown command or flag, a bad value, a bad file; also INVALID_ARGUMENT and OUT_OF_RANGE from the server. */
  USAGE: 2,
  /** NOT_FOUND: an unknown name or id. */
  NOT_FOUND: 3,
  /** ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, RESOURCE_EXHAUSTED (quota), or an ambiguous name or id prefix. */
  CONFLICT: 4,
  /** UNAUTHENTICATED or PERMISSION_DENIED. */
  AUTH: 5,
  /** The control plane cannot be reached, UNAVAILABLE or DEADLINE_EXCEEDED. */
  UNAVAILABLE: 6,
  /** --wait timed out, or the resource reached a failed state. */
  WAIT: 7,
} as const;

/** A mistake in how the CLI was called: exit 2. */
export class UsageError extends Error {}

/** An exit status already explained on stderr (the console's errors): nothing more is printed. */
export class ExitStatus extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

/** An error the CLI found itself, with its exit code (not found, ambiguous, wait failed). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly lines: readonly string[] = [],
  ) {
    super(message);
  }
}

/** CODE_NAME as gRPC spells it (INVALID_ARGUMENT) from connect's enum. */
export function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export function exitCodeOf(code: Code): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return EXIT.USAGE;
    case Code.NotFound:
      return EXIT.NOT_FOUND;
    case Code.AlreadyExists:
    case Code.FailedPrecondition:
    case Code.Aborted:
    case Code.ResourceExhausted:
      return EXIT.CONFLICT;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return EXIT.AUTH;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return EXIT.UNAVAILABLE;
    default:
      return EXIT.ERROR;
  }
}

/** Is this the transport failing to reach the server at all (nothing listening, DNS, TLS)? */
function unreachable(err: ConnectError): string | undefined {
  let cause: unknown = err.cause;
  for (let i = 0; i < 5 && cause; i++) {
    const c = cause as NodeJS.ErrnoException & { cause?: unknown };
    if (c.code && ["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET", "EAI_AGAIN", "ETIMEDOUT"].includes(c.code)) return c.code;
    cause = c.cause;
  }
  return undefined;
}

/** A TLS failure to verify the server's certificate, by its OpenSSL code. */
function untrusted(err: ConnectError): string | undefined {
  let cause: unknown = err.cause;
  for (let i = 0; i < 5 && cause; i++) {
    const c = cause as NodeJS.ErrnoException & { cause?: unknown };
    if (c.code && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(c.code)) return c.code;
    cause = c.cause;
  }
  return undefined;
}

/**
 * What a person reads: one line `Error: CODE: message`, then each field violation on its
 * own line, and the exit code.
 */
export function describeError(err: unknown, url: string | undefined): { lines: string[]; exitCode: number } {
  if (err instanceof UsageError) return { lines: [`Error: ${err.message}`], exitCode: EXIT.USAGE };
  if (err instanceof CliError) return { lines: [`Error: ${err.message}`, ...err.lines.map((l) => `  ${l}`)], exitCode: err.exitCode };
  if (err instanceof ConnectError) {
    const cert = untrusted(err);
    if (cert) {
      return {
        lines: [`Error: the control plane at ${url ?? "?"} has a certificate this client does not trust (${cert}): give its CA with 'quantix context add NAME --url ${url ?? "URL"} --ca-file ca.crt'`],
        exitCode: EXIT.UNAVAILABLE,
      };
    }
    const down = unreachable(err);
    if (down) {
      return {
        lines: [`Error: cannot reach the control plane at ${url ?? "?"} (${down}): is the control plane running? Start it with 'npm start', or choose another with --url or 'quantix context use'`],
        exitCode: EXIT.UNAVAILABLE,
      };
    }
    const violations = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
    let message = err.rawMessage;
    // The server's message repeats the violations ("invalid request: a: x; b: y"): they follow one a line.
    const first = violations[0];
    const at = first ? message.indexOf(`${first.field}: `) : -1;
    if (at > 0) message = message.slice(0, at).replace(/[\s:;,]+$/, "");
    const lines = [`Error: ${codeName(err.code)}: ${message}`];
    for (const v of violations) lines.push(`  ${v.field}: ${v.description}`);
    for (const d of err.findDetails(QuotaFailureSchema)) for (const v of d.violations) lines.push(`  ${v.subject}: ${v.description}`);
    if (err.code === Code.Unauthenticated) lines.push("  (log in with 'quantix login', or set QUANTIX_TOKEN)");
    return { lines, exitCode: exitCodeOf(err.code) };
  }
  const msg = err instanceof Error ? err.message : String(err);
  return { lines: [`Error: ${msg}`], exitCode: EXIT.ERROR };
}
