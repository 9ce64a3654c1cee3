import { Code, ConnectError, type Interceptor, type StreamRequest, type StreamResponse, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { clientDecodeError, toConnectError } from "../errors.js";
import { observeStream } from "./observe-stream.js";

type AnyResponse = UnaryResponse | StreamResponse;

/**
 * Maps every error a call ends with to the API's error vocabulary (STYLE rule 5, see
 * toConnectError): thrown before the response, or failing a response stream midway.
 * Interceptors inside it may throw QuantixErrors or anything else; those outside it (the
 * log line) see only ConnectErrors. A response stream that ends, or fails, once the call's
 * deadline has passed ends with DEADLINE_EXCEEDED: an implementation that stops when its
 * signal aborts ends its stream normally, and Connect's router would send that as success.
 */
export function mapErrors(): Interceptor {
  // Promise callbacks made once rather than an async function per call: this runs on every call.
  return (next) => (req) => {
    let res: Promise<AnyResponse>;
    try {
      res = next(req);
    } catch (err) {
      return Promise.reject(toConnectError(err));
    }
    if (!req.stream) return res.then(undefined, rethrowMapped);
    // A request stream is decoded inside the chain: bytes that are not its message are the client's error.
    const mapped = (err: unknown) => clientDecodeError(toConnectError(err), req.method.input);
    return res.then(
      (r) => mapStream(r, req, mapped),
      (err: unknown) => {
        throw mapped(err);
      },
    );
  };
}

function mapStream(res: AnyResponse, req: UnaryRequest | StreamRequest, mapped: (err: unknown) => ConnectError): AnyResponse {
  if (!res.stream) return res;
  // The signal is read when the stream ends, not before: the fast path makes it only when asked.
  const settle = (err: unknown) => deadlinePassed(req.signal) ?? (err === undefined ? undefined : mapped(err));
  return { ...res, message: observeStream(res.message, { settle }) };
}

function rethrowMapped(err: unknown): never {
  throw toConnectError(err);
}

/** The signal's reason if it aborted because the call's deadline passed. */
function deadlinePassed(signal: AbortSignal): ConnectError | undefined {
  const reason: unknown = signal.aborted ? signal.reason : undefined;
  return reason instanceof ConnectError && reason.code === Code.DeadlineExceeded ? reason : undefined;
}
