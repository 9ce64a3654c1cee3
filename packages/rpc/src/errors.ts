import type { DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, QuotaFailureSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { QuantixError, QuotaExceededError, type ErrorCode, type FieldViolation } from "@quantix/core";

const CODES: Record<ErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  aborted: Code.Aborted,
  out_of_range: Code.OutOfRange,
  data_loss: Code.DataLoss,
  unimplemented: Code.Unimplemented,
  resource_exhausted: Code.ResourceExhausted,
  deadline_exceeded: Code.DeadlineExceeded,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
};

/** The most UTF-8 bytes of an error message a client is sent (a grpc-message header stays small). */
export const MESSAGE_MAX_BYTES = 512;
/** The most UTF-8 bytes of a field path, and of a violation's description, in a BadRequest detail. */
const FIELD_MAX_BYTES = 128;
const DESCRIPTION_MAX_BYTES = 256;
/** The most UTF-8 bytes of all violations of a BadRequest detail (it travels in a header on gRPC). */
const VIOLATIONS_MAX_BYTES = 2048;

/**
 * Maps any error to what a client may see (STYLE rule 5). QuantixErrors keep their code
 * and message, with field violations as a google.rpc.BadRequest detail and exceeded
 * quotas as a google.rpc.QuotaFailure detail. ConnectErrors
 * (protocol and parse errors) keep their code. Anything else is a bug: the client gets
 * INTERNAL without a stack or a host path; the cause stays for the log. Whatever the
 * error, what it echoes is bounded (boundText): a message of at most MESSAGE_MAX_BYTES,
 * control characters escaped, violations within a budget.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) {
    const message = boundText(err.rawMessage);
    if (message === err.rawMessage) return err;
    const out = new ConnectError(message, err.code, err.metadata, undefined, err.cause);
    out.details.push(...err.details);
    return out;
  }
  if (err instanceof QuantixError) {
    const violations = boundViolations(err.violations);
    const details: ConstructorParameters<typeof ConnectError>[3] = violations.length > 0 ? [{ desc: BadRequestSchema, value: { fieldViolations: violations } }] : [];
    if (err instanceof QuotaExceededError) {
      const quota = err.quotaViolations.map((v) => ({ subject: boundText(v.subject, FIELD_MAX_BYTES), description: boundText(v.description, DESCRIPTION_MAX_BYTES) }));
      details.push({ desc: QuotaFailureSchema, value: { violations: quota } });
    }
    return new ConnectError(boundText(err.message), CODES[err.code], undefined, details, err);
  }
  return new ConnectError("internal error; the server log has the details", Code.Internal, undefined, undefined, err);
}

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "g");

/**
 * Text a client may be sent: control characters (C0, DEL, C1, line and paragraph
 * separators) escaped as `\uXXXX`, and cut to `maxBytes` of UTF-8 at a character
 * boundary, ending with an ellipsis.
 */
export function boundText(text: string, maxBytes = MESSAGE_MAX_BYTES): string {
  const s = UNSAFE.test(text) ? text.replace(UNSAFE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`) : text;
  // Fewer UTF-16 units than a quarter of the budget cannot exceed it.
  if (s.length * 4 <= maxBytes || Buffer.byteLength(s) <= maxBytes) return s;
  const budget = maxBytes - 3; // the ellipsis is 3 bytes
  let bytes = 0;
  let end = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (bytes + n > budget) break;
    bytes += n;
    end += ch.length;
  }
  return `${s.slice(0, end)}…`;
}

/** Violations as a detail carries them: each text bounded, as many as fit the budget. */
function boundViolations(list: readonly FieldViolation[]): FieldViolation[] {
  const out: FieldViolation[] = [];
  let bytes = 0;
  for (const v of list) {
    const b = { field: boundText(v.field, FIELD_MAX_BYTES), reason: boundText(v.reason, FIELD_MAX_BYTES), description: boundText(v.description, DESCRIPTION_MAX_BYTES) };
    bytes += Buffer.byteLength(b.field) + Buffer.byteLength(b.reason) + Buffer.byteLength(b.description);
    if (bytes > VIOLATIONS_MAX_BYTES && out.length > 0) break;
    out.push(b);
  }
  return out;
}

/** An UNIMPLEMENTED error that says which part of the product brings the RPC. */
export function unimplemented(procedure: string, arrivesWith: string): QuantixError {
  return new QuantixError("unimplemented", `${procedure} is not implemented yet: it arrives with ${arrivesWith}`);
}

/** What connect-es says, with INTERNAL, of request bytes it cannot decode. */
const UNDECODABLE = /^(parse binary: |received compressed envelope|decompression failed)/;

/**
 * A client's undecodable request as INVALID_ARGUMENT naming the message it is not, when
 * `err` is one (connect-es reports a request that is not the method's message, or a
 * compressed one it cannot decompress, as INTERNAL); any other error as it is.
 */
export function clientDecodeError(err: ConnectError, input: DescMessage): ConnectError {
  if (err.code !== Code.Internal || !UNDECODABLE.test(err.rawMessage)) return err;
  return undecodable(input, err.rawMessage.replace(/^parse binary: /, ""), err);
}

/** INVALID_ARGUMENT: the request is not a `input` message, for `reason`. */
export function undecodable(input: DescMessage, reason: string, cause?: unknown): ConnectError {
  return new ConnectError(`the request could not be decoded as ${input.typeName}: ${reason}`, Code.InvalidArgument, undefined, undefined, cause);
}
