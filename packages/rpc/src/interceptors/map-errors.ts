import type { Interceptor, StreamResponse, UnaryResponse } from "@connectrpc/connect";
import { toConnectError } from "../errors.js";
import { observeStream } from "./observe-stream.js";

type AnyResponse = UnaryResponse | StreamResponse;

/**
 * Maps every error a call ends with to the API's error vocabulary (STYLE rule 5, see
 * toConnectError): thrown before the response, or failing a response stream midway.
 * Interceptors inside it may throw QuantixErrors or anything else; those outside it (the
 * log line) see only ConnectErrors.
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
    return res.then(mapStream, rethrowMapped);
  };
}

function mapStream(res: AnyResponse): AnyResponse {
  return res.stream ? { ...res, message: observeStream(res.message, { settle }) } : res;
}

function rethrowMapped(err: unknown): never {
  throw toConnectError(err);
}

function settle(err: unknown): unknown {
  return err === undefined ? undefined : toConnectError(err);
}
