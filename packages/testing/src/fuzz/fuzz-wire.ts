import { fromJson, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { messageEdit, type Mutation } from "./fuzz-mutations.js";
import type { FuzzTarget } from "./fuzz-targets.js";

/** The protocols a fuzz run speaks, each over the HTTP version its clients use. */
export const PROTOCOLS = ["connect-json", "connect-binary", "grpc", "grpc-web"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** One request as it goes on the wire. */
export interface WireRequest {
  readonly protocol: Protocol;
  readonly http2: boolean;
  readonly method: "POST" | "GET";
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  /** A server-streaming RPC: an answer may be a stream that stays open. */
  readonly streaming: boolean;
}

/** How long a server stream may run: the request asks its server to end it (unless a mutation drops the header). */
export const STREAM_TIMEOUT_MS = 300;

/** The request `target` spoiled by `mu`, encoded for `protocol`. */
export function wireRequest(protocol: Protocol, target: FuzzTarget, mu: Mutation): WireRequest {
  const streaming = target.method.methodKind === "server_streaming";
  const enveloped = streaming || protocol === "grpc" || protocol === "grpc-web";
  const payload = encode(protocol, target, mu);
  let body: Buffer = enveloped ? envelope(payload) : payload;
  const headers = headersOf(protocol, streaming);
  let path = `/${target.method.parent.typeName}/${target.method.name}`;
  let method: "POST" | "GET" = "POST";
  switch (mu.kind) {
    case "truncated":
      body = body.subarray(0, Math.floor(body.length * mu.fraction));
      break;
    case "wrong-length":
      if (enveloped) body.writeUInt32BE(Math.min(0xffffffff, Math.max(0, payload.length + mu.delta)), 1);
      else body = body.subarray(0, Math.max(0, body.length - Math.abs(mu.delta)));
      break;
    case "random-bytes":
      body = mu.enveloped ? envelope(Buffer.from(mu.bytes)) : Buffer.from(mu.bytes);
      break;
    case "extra-messages":
      body = Buffer.concat(Array.from({ length: mu.count }, () => body));
      break;
    case "compressed-flag":
      if (enveloped) body[0] = 1;
      if (mu.declareGzip) headers[protocol.startsWith("grpc") ? "grpc-encoding" : streaming ? "connect-content-encoding" : "content-encoding"] = "gzip";
      break;
    case "wrong-content-type":
      headers["content-type"] = mu.contentType;
      break;
    case "missing-headers":
      for (const h of mu.drop) delete headers[h];
      break;
    case "bad-timeout":
      headers[protocol === "connect-json" || protocol === "connect-binary" ? "connect-timeout-ms" : "grpc-timeout"] = mu.value;
      break;
    case "unknown-method":
      path = mu.path;
      break;
    case "empty-body":
      body = Buffer.alloc(0);
      break;
    case "get-method":
      method = "GET";
      path += mu.query;
      body = Buffer.alloc(0);
      break;
    default:
      break;
  }
  return { protocol, http2: protocol === "connect-binary" || protocol === "grpc", method, path, headers, body, streaming };
}

/** The request message's bytes: proto JSON for Connect JSON, protobuf for the rest. */
function encode(protocol: Protocol, t: FuzzTarget, mu: Mutation): Buffer {
  const edit = messageEdit(mu, t);
  const schema = t.method.input;
  const firstString = schema.fields.find((f) => f.fieldKind === "scalar" && f.scalar === 9) ?? schema.fields[0];
  if (mu.kind === "bad-json") return Buffer.from(mu.text);
  if (mu.kind === "deep-json") return Buffer.from(`{"${firstString?.jsonName ?? "id"}": ${"[".repeat(mu.depth)}${"]".repeat(mu.depth)}}`);
  if (protocol === "connect-json") {
    const o: Record<string, unknown> = { ...t.request };
    if (edit) o[edit.field] = edit.json;
    if (mu.kind === "wrong-type") o[t.idField ?? firstString?.jsonName ?? "id"] = mu.value;
    if (mu.kind === "unknown-field") o[mu.name] = mu.value;
    return Buffer.from(JSON.stringify(o));
  }
  const msg = fromJson(schema, t.request as JsonObject) as unknown as Record<string, unknown>;
  if (edit) msg[schema.fields.find((f) => f.jsonName === edit.field)!.localName] = edit.proto;
  const bytes = Buffer.from(toBinary(schema, msg as never));
  if (mu.kind === "wrong-type" && firstString) {
    // The field's number with another wire type, then bytes that may or may not fit it.
    return Buffer.concat([bytes, new BinaryWriter().tag(firstString.number, mu.wireType as WireType).raw(Uint8Array.of(0x05, 0x61, 0x62)).finish()]);
  }
  if (mu.kind === "unknown-field") {
    return Buffer.concat([bytes, new BinaryWriter().tag(9999, WireType.LengthDelimited).string(mu.name).finish()]);
  }
  return bytes;
}

function headersOf(protocol: Protocol, streaming: boolean): Record<string, string> {
  const timeout = { "connect-timeout-ms": String(STREAM_TIMEOUT_MS) };
  const grpcTimeout = { "grpc-timeout": `${STREAM_TIMEOUT_MS}m` };
  switch (protocol) {
    case "connect-json":
      return streaming ? { "content-type": "application/connect+json", "connect-protocol-version": "1", ...timeout } : { "content-type": "application/json", "connect-protocol-version": "1" };
    case "connect-binary":
      return streaming ? { "content-type": "application/connect+proto", "connect-protocol-version": "1", ...timeout } : { "content-type": "application/proto", "connect-protocol-version": "1" };
    case "grpc":
      return { "content-type": "application/grpc", te: "trailers", ...(streaming ? grpcTimeout : {}) };
    case "grpc-web":
      return { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...(streaming ? grpcTimeout : {}) };
  }
}

/** A length-prefixed message (gRPC, gRPC-Web and Connect streaming): flags 0, big-endian length, payload. */
export function envelope(payload: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}
