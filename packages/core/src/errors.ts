/**
 * One error vocabulary for all inner code (STYLE rule 5). Inner code throws
 * {@link QuantixError}; the RPC layer maps it to a Connect error once. Codes use the
 * gRPC/Connect names so the mapping is one-to-one, without importing a transport here.
 */
export type ErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "aborted"
  | "out_of_range"
  /** Data went missing on the way (a stream ended short of the size it declared). */
  | "data_loss"
  | "unimplemented"
  | "resource_exhausted"
  | "deadline_exceeded"
  | "unavailable"
  | "internal"
  /** The call carries no valid credentials (issue 12). */
  | "unauthenticated"
  /** The caller is known but lacks a role or permission, which the message names. */
  | "permission_denied";

/** One violated rule of a request, named by its field path (e.g. `spec.cpu.cores`). */
export interface FieldViolation {
  /** Path of the field in the request, in proto field names: `spec.disks[2].size_gib`. */
  readonly field: string;
  /** What is wrong and what is allowed. */
  readonly description: string;
  /** A machine-readable reason, e.g. `OUT_OF_RANGE`, `REQUIRED`, `INVALID_FORMAT`. */
  readonly reason: string;
}

/** An error with a code a client can act on, and the field violations behind it. */
export class QuantixError extends Error {
  override readonly name = "QuantixError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly violations: readonly FieldViolation[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** INVALID_ARGUMENT listing every violation at once. */
export function invalidArgument(violations: readonly FieldViolation[]): QuantixError {
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new QuantixError("invalid_argument", `invalid request: ${summary}`, violations);
}

/** NOT_FOUND naming the resource kind and id. */
export function notFound(kind: string, id: string): QuantixError {
  return new QuantixError("not_found", `${kind} '${id}' not found`);
}

/** Throws INVALID_ARGUMENT when there is at least one violation. */
export function throwIfViolations(violations: readonly FieldViolation[]): void {
  if (violations.length > 0) throw invalidArgument(violations);
}
