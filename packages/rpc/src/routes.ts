import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import type { Compression } from "@connectrpc/connect/protocol";
import { compressionBrotli } from "@connectrpc/connect-node";
import { gzipWherePays } from "./fast-path/response-compression.js";

/** One service and its implementation: served by Connect's router and by the gRPC fast path alike. */
export interface Route {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
  /** Message size limits of this service, when they differ from the server's (the MemoryGateway's 100 MiB documents). */
  readonly limits?: { readonly readMaxBytes: number; readonly writeMaxBytes: number };
  /**
   * Gzip unary gRPC responses of at least this many bytes on the fast path, for clients
   * that accept gzip, where it pays (fast-path/response-compression.ts); the Connect
   * router compresses by size (connect-es's compressMinBytes), with incompressible
   * messages in gzip's stored blocks (gzipWherePays).
   */
  readonly compressMinBytes?: number;
}

/** Pairs a service with its implementation, keeping the implementation's type checked. */
export function route<T extends DescService>(service: T, impl: Partial<ServiceImpl<T>>, limits?: Route["limits"]): Route {
  return { service, impl: impl as Partial<ServiceImpl<DescService>>, ...(limits ? { limits } : {}) };
}

/** Registers every route on a Connect router; returns the procedures served ("pkg.Service/Method"). */
export function registerRoutes(router: ConnectRouter, routes: readonly Route[]): string[] {
  for (const r of routes) router.service(r.service, r.impl, serviceOptions(r));
  return procedures(routes.map((r) => r.service));
}

/** The options a route's service is registered with on the router, over the router's own (the Connect fast path takes the same). */
export function serviceOptions(r: Route): { readMaxBytes?: number; writeMaxBytes?: number; compressMinBytes?: number; acceptCompression?: Compression[] } {
  return { ...r.limits, ...(r.compressMinBytes !== undefined ? { compressMinBytes: r.compressMinBytes, acceptCompression: [gzipWherePays, compressionBrotli] } : {}) };
}

/** Every procedure of `services`, as "pkg.Service/Method". */
export function procedures(services: readonly DescService[]): string[] {
  return services.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
}
