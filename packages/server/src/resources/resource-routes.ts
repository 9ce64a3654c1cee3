import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Kind, Resource, Store } from "@quantix/core";
import { route, type Route } from "../rpc/routes.js";
import { filterFields, type CustomFilter } from "./request-filter.js";
import { ResourceReader } from "./resource-service.js";

/** What a resource service adds to the generic Get, List and Watch. */
export interface ResourceRouteOptions<S extends DescService> {
  /** The methods with rules of their own (Create, Update, Delete, actions): they win over the generic ones. */
  readonly impl?: Partial<ServiceImpl<S>>;
  /** Request fields that filter otherwise than by a kind field of their name (e.g. schedulable_only). */
  readonly filters?: Readonly<Record<string, CustomFilter>>;
}

/**
 * A service's route, its Get, List and Watch methods served generically for `kind`
 * (ResourceReader), by their names: Get<X> by `id`; List<X>s with the request's filters;
 * Watch<X>s over a filtered set; Watch<X> of one object by the request's id field. Every
 * other method comes from `options.impl`; one that has none is a programming error, found
 * when the routes are built (as is a request field the kind cannot filter on).
 */
export function resourceRoute<S extends DescService>(service: S, kind: Kind<Resource>, store: Store, options: ResourceRouteOptions<S> = {}): Route {
  const reader = new ResourceReader(kind, store);
  const impl: Record<string, unknown> = { ...(options.impl ?? {}) };
  for (const m of service.methods) {
    if (impl[m.localName]) continue;
    impl[m.localName] = generic(m, reader, options.filters ?? {});
  }
  return route(service, impl as Partial<ServiceImpl<S>>);
}

type Req = Record<string, unknown> & { id: string; pageSize: number; pageToken: string; orderBy: string; resourceVersion: bigint };

function generic(m: DescMethod, reader: ResourceReader<Resource>, filters: Readonly<Record<string, CustomFilter>>): unknown {
  const kind = reader.kind;
  if (m.methodKind === "unary" && m.name.startsWith("Get") && m.input.fields.some((f) => f.name === "id")) {
    return (req: Req) => reader.get(req.id);
  }
  if (m.methodKind === "unary" && m.name.startsWith("List")) {
    filterFields(kind, m.input, filters);
    return (req: Req) => reader.list(m.input, m.output, req, filters);
  }
  if (m.methodKind === "server_streaming" && m.name.startsWith("Watch")) {
    // Watch<X> (singular) follows one object, named by the request's id field.
    const idField = m.name.endsWith("s") ? undefined : m.input.fields.find((f) => f.fieldKind === "scalar" && (f.name === "id" || f.name.endsWith("_id")));
    if (idField) {
      return (req: Req, ctx: { signal: AbortSignal }) => reader.watchOne(m.output, req[idField.localName] as string, idField.name, req.resourceVersion, ctx.signal);
    }
    filterFields(kind, m.input, filters);
    return (req: Req, ctx: { signal: AbortSignal }) => reader.watchMany(m.input, m.output, req, ctx.signal, filters);
  }
  throw new Error(`${m.parent.typeName}/${m.name} has no implementation: give it in the route's impl`);
}
