import { promisify } from "node:util";
import { constants, gzip, gzipSync } from "node:zlib";
import type { Compression } from "@connectrpc/connect/protocol";
import { compressionGzip } from "@connectrpc/connect-node";

const gzipAsync = promisify(gzip);

/** Bytes of a payload gzipped first to see whether the whole is worth it. */
const SAMPLE_BYTES = 64 * 1024;
/** Compression pays when it saves at least this fraction. */
const MIN_SAVING = 0.1;

/** Whether a sample of `payload` shrinks by MIN_SAVING at the fastest level. */
function compressible(payload: Uint8Array): boolean {
  const sample = payload.subarray(0, SAMPLE_BYTES);
  return gzipSync(sample, { level: constants.Z_BEST_SPEED }).length <= sample.length * (1 - MIN_SAVING);
}

const levelFor = (n: number) => (n > 1024 * 1024 ? constants.Z_BEST_SPEED : constants.Z_DEFAULT_COMPRESSION);

/**
 * gzip for the Connect router where it pays: a message whose sample does not shrink
 * (already compressed, encrypted, random) is sent in stored blocks (gzip's level 0: a
 * copy and a checksum) instead of being run through the compressor for nothing. The
 * router decides by size alone whether to compress at all (compressMinBytes).
 */
export const gzipWherePays: Compression = {
  name: "gzip",
  compress: (bytes) => gzipAsync(bytes, { level: compressible(bytes) ? levelFor(bytes.length) : constants.Z_NO_COMPRESSION }),
  decompress: (bytes, readMaxBytes) => compressionGzip.decompress(bytes, readMaxBytes),
};

/** gzipWherePays, synchronously: for a stream's messages, which the pump writes as they come. */
export const gzipWherePaysSync = (bytes: Uint8Array): Uint8Array => gzipSync(bytes, { level: compressible(bytes) ? levelFor(bytes.length) : constants.Z_NO_COMPRESSION });

/** Whether the client's grpc-accept-encoding lists gzip. */
export function acceptsGzip(header: string | string[] | undefined): boolean {
  const v = Array.isArray(header) ? header.join(",") : (header ?? "");
  return v.split(",").some((e) => e.trim() === "gzip");
}

/**
 * A gRPC frame (flag, length, message) gzipped when that pays: the message is at least
 * `minBytes`, a sample of it shrinks by MIN_SAVING at the fastest level, and so does the
 * whole. Otherwise undefined, and the frame goes as it is (gRPC flags compression per
 * message, so a stream may mix both). Large messages are compressed off the event loop,
 * at the fastest level.
 */
export async function gzipFrameIfItPays(frame: Uint8Array, minBytes: number): Promise<Uint8Array | undefined> {
  const payload = frame.subarray(5);
  if (payload.length < minBytes) return undefined;
  if (!compressible(payload)) return undefined;
  const packed = await gzipAsync(payload, { level: levelFor(payload.length) });
  if (packed.length > payload.length * (1 - MIN_SAVING)) return undefined;
  const out = Buffer.allocUnsafe(packed.length + 5);
  out[0] = 1;
  out.writeUInt32BE(packed.length, 1);
  out.set(packed, 5);
  return out;
}
