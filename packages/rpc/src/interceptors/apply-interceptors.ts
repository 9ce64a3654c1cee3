import type { Interceptor } from "@connectrpc/connect";

/** A call through an interceptor chain: what connect-es calls AnyFn (not exported by it). */
export type AnyFn = Parameters<Interceptor>[0];

/**
 * Wraps `fn` in `interceptors`, the first one outermost: the order connect-es gives the
 * same array on its router (`@connectrpc/connect`'s own applyInterceptors, which it does
 * not export), so every protocol path nests them alike.
 */
export function applyInterceptors(fn: AnyFn, interceptors: readonly Interceptor[]): AnyFn {
  for (let i = interceptors.length - 1; i >= 0; i--) fn = interceptors[i]!(fn);
  return fn;
}
