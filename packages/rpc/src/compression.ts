import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";

/** The request encodings the server decompresses (on the router: compressed gRPC leaves the fast path). */
export const ACCEPT_COMPRESSION = [compressionGzip, compressionBrotli];

/** The same, as gRPC's grpc-accept-encoding response header lists them. */
export const GRPC_ACCEPT_ENCODING = ACCEPT_COMPRESSION.map((c) => c.name).join(",");
