import type { DescMethod } from "@bufbuild/protobuf";
import { invalidArgument, requestIdFields, requestIdViolations, type Kind, type Resource } from "@quantix/core";

type Handler = (req: Record<string, unknown>, ctx: unknown) => unknown;

/**
 * Wraps a method of a resource service so that every id its request carries is checked
 * against its format (requestIdFields: the kind's own ids, project ids, references)
 * before the handler runs: a malformed id is INVALID_ARGUMENT naming its field, and never
 * reaches a store, a log line or an error message. The subject of a request (`id`,
 * `vm_id` of WatchVM) must be given, except where the request creates (Create, Register)
 * or reads a set (List, Watch of many) and an empty id means "none", or names its subject in a oneof the handler checks (ImportImage).
 */
export function checkingIds(m: DescMethod, kind: Kind<Resource>, handler: Handler): Handler {
  const fields = requestIdFields(kind, m.input, !/^(Create|Register|List|Import)/.test(m.name) && !(m.name.startsWith("Watch") && m.name.endsWith("s")));
  if (fields.length === 0) return handler;
  const streaming = m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";
  return (req, ctx) => {
    const violations = requestIdViolations(fields, req);
    if (violations.length === 0) return handler(req, ctx);
    const err = invalidArgument(violations);
    // A streaming handler returns its messages: the error is its first and last.
    return streaming ? failing(err) : Promise.reject(err);
  };
}

async function* failing(err: Error): AsyncGenerator<never> {
  throw err;
}
