import type { DescMessage } from "@bufbuild/protobuf";
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
