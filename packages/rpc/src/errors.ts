import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { QuantixError, type ErrorCode } from "@quantix/core";

const CODES: Record<ErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  aborted: Code.Aborted,
  out_of_range: Code.OutOfRange,
  unimplemented: Code.Unimplemented,
  resource_exhausted: Code.ResourceExhausted,
  deadline_exceeded: Code.DeadlineExceeded,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

/**
 * Maps any error to what a client may see (STYLE rule 5). QuantixErrors keep their code
 * and message, with field violations as a google.rpc.BadRequest detail. ConnectErrors
 * (protocol and parse errors) pass unchanged. Anything else is a bug: the client gets
 * INTERNAL without a stack or a host path; the cause stays for the log.
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof QuantixError) {
    const details = err.violations.length > 0 ? [{ desc: BadRequestSchema, value: { fieldViolations: err.violations.map((v) => ({ ...v })) } }] : [];
    return new ConnectError(err.message, CODES[err.code], undefined, details, err);
  }
  return new ConnectError("internal error; the server log has the details", Code.Internal, undefined, undefined, err);
}

/** An UNIMPLEMENTED error that says which part of the product brings the RPC. */
export function unimplemented(procedure: string, arrivesWith: string): QuantixError {
  return new QuantixError("unimplemented", `${procedure} is not implemented yet: it arrives with ${arrivesWith}`);
}
