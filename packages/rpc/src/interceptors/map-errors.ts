import type { Interceptor } from "@connectrpc/connect";
import { toConnectError } from "../errors.js";
import { observeStream } from "./observe-stream.js";

const settle = (err: unknown): unknown => (err === undefined ? undefined : toConnectError(err));

/**
 * Maps every error a call ends with to the API's error vocabulary (STYLE rule 5, see
 * toConnectError): thrown before the response, or failing a response stream midway.
 * Interceptors inside it may throw QuantixErrors or anything else; those outside it (the
 * log line) see only ConnectErrors.
 */
export function mapErrors(): Interceptor {
  return (next) => async (req) => {
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw toConnectError(err);
    }
    return res.stream ? { ...res, message: observeStream(res.message, { settle }) } : res;
  };
}
