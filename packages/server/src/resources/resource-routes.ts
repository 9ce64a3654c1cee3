import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { budgetOf } from "../rpc/budget.js";
import type { ResourceWriter } from "./resource-writer.js";
import type { Kind, Resource, Store } from "@quantix/core";
import { route, type Route } from "@quantix/rpc";
import { filterFields, isLookup, type CustomFilter } from "./request-filter.js";
import { checkingIds } from "./request-ids.js";
import { ResourceReader } from "./resource-service.js";

/** What a resource service adds to the generic Get, List and Watch. */
export interface ResourceRouteOptions<S extends DescService> {
  /** The methods with rules of their own (Create, Update, Delete, actions): they win over the generic ones. */
  readonly impl?: Partial<ServiceImpl<S>>;
  /** Request fields that filter otherwise than by a kind field of their name (e.g. schedulable_only), or by a lookup (List only). */
  readonly filters?: Readonly<Record<string, CustomFilter>>;
  /** The kind's writes: with it, Create<X>, Update<X> and Delete<X> are served generically too. */
  readonly writer?: ResourceWriter<Resource>;
  /** How long Delete<X> waits for the object to go when the client gives no deadline. */
  readonly defaultDeadlineMs?: number;
}

/**
 * A service's route, its Get, List and Watch methods served generically for `kind`
 * (ResourceReader), by their names: Get<X> by `id`; List<X>s with the request's filters;
 * Watch<X>s over a filtered set; Watch<X> of one object by the request's id field. Every
 * other method comes from `options.impl`; one that has none is a programming error, found
 * when the routes are built (as is a request field the kind cannot filter on). Every
 * method, generic or given, first checks the ids its request carries (checkingIds).
 */
export function resourceRoute<S extends DescService>(service: S, kind: Kind<Resource>, store: Store, options: ResourceRouteOptions<S> = {}): Route {
  const reader = new ResourceReader(kind, store);
  const given: Record<string, unknown> = { ...(options.impl ?? {}) };
  const impl: Record<string, unknown> = {};
  for (const m of service.methods) {
    const handler = given[m.localName] ?? genericWrite(m, kind, options) ?? generic(m, reader, options.filters ?? {});
    impl[m.localName] = checkingIds(m, kind, handler as Parameters<typeof checkingIds>[2]);
  }
  return route(service, impl as Partial<ServiceImpl<S>>);
}

/** Create<X>, Update<X> and Delete<X>, when the kind has a writer. */
function genericWrite<S extends DescService>(m: DescMethod, kind: Kind<Resource>, options: ResourceRouteOptions<S>): unknown {
  const writer = options.writer;
  if (!writer || m.methodKind !== "unary") return undefined;
  if (m.name.startsWith("Create")) {
    // The request's fields that the kind's message has (name, description, labels, spec, project_id, ...).
    const names = m.input.fields.filter((f) => kind.schema.fields.some((k) => k.name === f.name && k.fieldKind === f.fieldKind)).map((f) => f.localName);
    return (req: Record<string, unknown>) => writer.create(Object.fromEntries(names.map((n) => [n, req[n]])));
  }
  if (m.name.startsWith("Update")) return (req: Req) => writer.update(req.id, m.input, req);
  if (m.name.startsWith("Delete")) {
    return async (req: Req, ctx: HandlerContext) => {
      await writer.delete(req.id, budgetOf(ctx, options.defaultDeadlineMs ?? 30_000));
      return create(m.output);
    };
  }
  return undefined;
}

type Req = Record<string, unknown> & { id: string; pageSize: number; pageToken: string; orderBy: string; resourceVersion: bigint };

function generic(m: DescMethod, reader: ResourceReader<Resource>, filters: Readonly<Record<string, CustomFilter>>): unknown {
  const kind = reader.kind;
  if (m.methodKind === "unary" && m.name.startsWith("Get") && m.input.fields.some((f) => f.name === "id")) {
    return (req: Req) => reader.get(req.id);
  }
  if (m.methodKind === "unary" && m.name.startsWith("List")) {
    filterFields(kind, m.input, filters);
    return (req: Req, ctx: HandlerContext) => reader.list(m.input, m.output, req, filters, ctx);
  }
  if (m.methodKind === "server_streaming" && m.name.startsWith("Watch")) {
    // Watch<X> (singular) follows one object, named by the request's id field.
    const idField = m.name.endsWith("s") ? undefined : m.input.fields.find((f) => f.fieldKind === "scalar" && (f.name === "id" || f.name.endsWith("_id")));
    if (idField) {
      return (req: Req, ctx: { signal: AbortSignal }) => reader.watchOne(m.output, req[idField.localName] as string, idField.name, req.resourceVersion, ctx.signal);
    }
    const lookup = filterFields(kind, m.input, filters).find((f) => isLookup(filters[f.name]));
    if (lookup) throw new Error(`${m.input.typeName}.${lookup.name} has a lookup filter, which a Watch cannot keep current: give it a where filter`);
    return (req: Req, ctx: HandlerContext) => reader.watchMany(m.input, m.output, req, ctx.signal, filters, ctx);
  }
  throw new Error(`${m.parent.typeName}/${m.name} has no implementation: give it in the route's impl`);
}
