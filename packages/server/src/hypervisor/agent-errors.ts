import { Code, ConnectError } from "@connectrpc/connect";
import { QuantixError, type ErrorCode } from "@quantix/core";

const CODES: Partial<Record<Code, ErrorCode>> = {
  [Code.InvalidArgument]: "invalid_argument",
  [Code.NotFound]: "not_found",
  [Code.AlreadyExists]: "already_exists",
  [Code.FailedPrecondition]: "failed_precondition",
  [Code.Aborted]: "aborted",
  [Code.OutOfRange]: "out_of_range",
  [Code.DataLoss]: "data_loss",
  [Code.Unimplemented]: "unimplemented",
  [Code.ResourceExhausted]: "resource_exhausted",
  [Code.DeadlineExceeded]: "unavailable",
  [Code.Unavailable]: "unavailable",
  [Code.Canceled]: "unavailable",
};

/**
 * An error from a host agent as the control plane's own error, keeping the agent's code
 * and words (STYLE rule 5): a FAILED_PRECONDITION from the agent reaches the user as
 * FAILED_PRECONDITION. A transport failure (refused, reset, timed out) is UNAVAILABLE
 * naming the node; anything unexpected is INTERNAL, with the cause kept for the log.
 */
export function fromAgentError(err: unknown, node: string): QuantixError {
  if (err instanceof QuantixError) return err;
  const ce = ConnectError.from(err);
  const code = CODES[ce.code] ?? "internal";
  if (code === "unavailable") return new QuantixError(code, `the agent of node '${node}' is unreachable: ${ce.rawMessage}`, [], { cause: err });
  return new QuantixError(code, ce.rawMessage, [], { cause: err });
}
