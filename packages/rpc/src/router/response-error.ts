import { ConnectError } from "@connectrpc/connect";
import { encodeEnvelope, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, endStreamFlag, endStreamFromJson, endStreamToJson, errorFromJsonBytes, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

// The error a response of Connect's router ends with, read (and replaced) where each
// protocol carries it: gRPC trailers, gRPC-Web's trailer frame, a Connect unary error body,
// a Connect stream's end frame. Errors raised before the interceptor chain (a request
// connect-es cannot decode, one too large) reach no interceptor; this is where the kit
// sees them, to correct their code and to log and count them.

/** How a router response carries its status. */
export type WireProtocol = "grpc" | "grpc-web" | "connect-unary" | "connect-stream";

/** The protocol of a request to the router, from its content type. */
export function wireProtocolOf(contentType: string): WireProtocol {
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  return contentType.startsWith("application/connect+") ? "connect-stream" : "connect-unary";
}

/** Given the error a response ends with, returns the one it ends with instead (or the same). */
export type ErrorFix = (err: ConnectError) => ConnectError;

/** `res` with the error it ends with, if any, passed through `fix`, once the body has been read. */
export function fixResponseError(protocol: WireProtocol, res: UniversalServerResponse, fix: ErrorFix): UniversalServerResponse {
  const body = res.body;
  if (body === undefined || !(Symbol.asyncIterator in body)) return res;
  switch (protocol) {
    case "grpc":
      return res.trailer ? { ...res, body: grpcBody(body, res.trailer, fix) } : res;
    case "grpc-web":
      return { ...res, body: mapFrames(body, trailerFlag, (data) => fixTrailer(data, fix)) };
    case "connect-stream":
      return { ...res, body: mapFrames(body, endStreamFlag, (data) => fixEndStream(data, fix)) };
    case "connect-unary":
      return res.status === 200 || !res.header || res.header.has("content-encoding") ? res : fixUnary(res, res.header, body, fix);
  }
}

async function* grpcBody(body: AsyncIterable<Uint8Array>, trailer: Headers, fix: ErrorFix): AsyncIterable<Uint8Array> {
  yield* body;
  const err = findTrailerError(trailer);
  const fixed = err && fix(err);
  if (fixed && fixed !== err) setTrailerStatus(trailer, fixed);
}

/** Passes chunks through, rewriting a chunk that is one whole, uncompressed frame with exactly `flag`. */
async function* mapFrames(body: AsyncIterable<Uint8Array>, flag: number, rewrite: (data: Uint8Array) => Uint8Array | undefined): AsyncIterable<Uint8Array> {
  for await (const chunk of body) {
    const whole = chunk.length >= 5 && chunk[0] === flag && new DataView(chunk.buffer, chunk.byteOffset, chunk.length).getUint32(1) === chunk.length - 5;
    const data = whole ? rewrite(chunk.subarray(5)) : undefined;
    yield data ? encodeEnvelope(flag, data) : chunk;
  }
}

function fixTrailer(data: Uint8Array, fix: ErrorFix): Uint8Array | undefined {
  const trailer = trailerParse(data);
  const err = findTrailerError(trailer);
  const fixed = err && fix(err);
  return fixed && fixed !== err ? trailerSerialize(setTrailerStatus(trailer, fixed)) : undefined;
}

function fixEndStream(data: Uint8Array, fix: ErrorFix): Uint8Array | undefined {
  const end = endStreamFromJson(data);
  const fixed = end.error && fix(end.error);
  return fixed && fixed !== end.error ? new TextEncoder().encode(JSON.stringify(endStreamToJson(end.metadata, fixed, undefined))) : undefined;
}

/** What a body that is not a Connect error reads as. */
const NOT_AN_ERROR = new ConnectError("not a Connect error body");

function fixUnary(res: UniversalServerResponse, header: Headers, body: AsyncIterable<Uint8Array>, fix: ErrorFix): UniversalServerResponse {
  const out: UniversalServerResponse = { ...res };
  out.body = (async function* () {
    const chunks: Uint8Array[] = [];
    for await (const c of body) chunks.push(c);
    const bytes = Buffer.concat(chunks);
    let err: ConnectError = NOT_AN_ERROR;
    try {
      err = errorFromJsonBytes(bytes, undefined, NOT_AN_ERROR);
    } catch {
      // An HTTP-level refusal without a Connect error body: left as it is.
    }
    const fixed = err === NOT_AN_ERROR ? err : fix(err);
    if (fixed === err) {
      yield bytes;
      return;
    }
    const json = errorToJsonBytes(fixed, undefined);
    out.status = codeToHttpStatus(fixed.code);
    header.set("content-length", String(json.length));
    yield json;
  })();
  return out;
}
