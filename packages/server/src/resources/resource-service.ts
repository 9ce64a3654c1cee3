import { create, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { checkId, matchesQuery, notFound, RESOURCE_ID_FORMAT, throwIfViolations, Violations, type IdFormat, type Kind, type Resource, type Store } from "@quantix/core";
import { listPage } from "../services/paging.js";
import { filterEvent, SharedUpdates, watchFiltered, type FilteredEvent } from "../services/watch-filter.js";
import { filterOf, queryOf, resolveLookups, type CustomFilter, type RequestFilter } from "./request-filter.js";
import { visibleFilter } from "../identity/visible-projects.js";
import type { HandlerContext } from "@connectrpc/connect";

const EVENT_TYPE: Record<FilteredEvent<unknown>["type"], EventType> = { ADDED: EventType.ADDED, MODIFIED: EventType.MODIFIED, DELETED: EventType.DELETED, SYNCED: EventType.SYNCED };

/** The one field of `schema` that carries objects of `kind` (a repeated one for a list response). */
export function objectField(schema: DescMessage, kind: Kind<Resource>, repeated: boolean): DescField {
  const f = schema.fields.find((x) => (repeated ? x.fieldKind === "list" && x.listKind === "message" : x.fieldKind === "message") && x.message?.typeName === kind.schema.typeName);
  if (!f) throw new Error(`${schema.typeName} has no ${repeated ? "repeated " : ""}field of ${kind.schema.typeName}`);
  return f;
}

/** INVALID_ARGUMENT unless `id` is present and in `format` (an id with a NUL byte never reaches the store). */
export function requireWellFormedId(field: string, id: string, format: IdFormat = RESOURCE_ID_FORMAT): void {
  const v = new Violations();
  checkId(v, field, id, format);
  throwIfViolations(v.list);
}

/**
 * The read side every resource service shares, for any declared kind: Get, List (filters
 * read from the request by reflection, order_by, page tokens, total) and Watch (one
 * object, or a filtered set: a snapshot or a resume from a resource version, SYNCED,
 * then every change). Responses are built by reflection on the RPC's output message.
 */
export class ResourceReader<T extends Resource> {
  private readonly updates = new Map<DescMessage, SharedUpdates<T, unknown>>();

  constructor(
    readonly kind: Kind<T>,
    private readonly store: Store,
  ) {}

  async get(id: string, field = "id"): Promise<T> {
    requireWellFormedId(field, id, this.kind.idFormat);
    const o = await this.store.of(this.kind).get(id);
    if (!o) throw notFound(this.kind.name, id);
    return this.present(o);
  }

  /** What a read returns of `o`: the kind's redaction (secrets emptied), if it has one. */
  present(o: T): T {
    return this.kind.redact ? (this.kind.redact(o) as T) : o;
  }

  /** A List RPC: `input` and `output` are its messages' descriptors. */
  async list(input: DescMessage, output: DescMessage, req: Record<string, unknown> & { pageSize: number; pageToken: string; orderBy: string }, custom?: Readonly<Record<string, CustomFilter>>, ctx?: HandlerContext): Promise<unknown> {
    const asked = this.visible(filterOf(this.kind as unknown as Kind<Resource>, input, req, custom), ctx);
    // Lookups are made for each page; the page token is bound to what was asked.
    const filter = await resolveLookups(asked, custom ?? {});
    const page = await listPage(this.kind, req, asked, (order, after, limit, countTotal) => this.store.of(this.kind).list({ ...queryOf(filter), order, after, limit, countTotal }));
    const items = objectField(output, this.kind as unknown as Kind<Resource>, true);
    return create(output, { [items.localName]: this.kind.redact ? page.items.map((o) => this.present(o)) : page.items, nextPageToken: page.nextPageToken, totalCount: page.totalCount, resourceVersion: page.resourceVersion } as never);
  }

  /** A Watch RPC over a filtered set of objects. */
  watchMany(input: DescMessage, output: DescMessage, req: Record<string, unknown> & { resourceVersion: bigint }, signal: AbortSignal, custom?: Readonly<Record<string, CustomFilter>>, ctx?: HandlerContext): AsyncIterable<unknown> {
    const filter = this.visible(filterOf(this.kind as unknown as Kind<Resource>, input, req, custom), ctx);
    const q = queryOf(filter);
    const coll = this.store.of(this.kind);
    const snapshot = () => coll.list({ ...q, order: { field: this.kind.orderBy[0]!, desc: false }, limit: Number.MAX_SAFE_INTEGER });
    // Watchers asking the same query (most ask none) share how each batch of changes is filtered.
    return watchFiltered(coll, req.resourceVersion, snapshot, (o) => matchesQuery(this.kind, o, q), this.updatesOf(output), signal, queryKey(q));
  }

  /** A Watch RPC over one object: its current state (unless resuming), then every change until it is deleted. */
  async *watchOne(output: DescMessage, id: string, field: string, fromRevision: bigint, signal: AbortSignal): AsyncGenerator<unknown> {
    requireWellFormedId(field, id, this.kind.idFormat);
    const build = this.updatesOf(output);
    let from = fromRevision;
    // Changes up to the current state are in the ADDED event; skip them in the replay.
    let seen = from;
    if (from === 0n) {
      // The store's revision before the read: history reaches back to it even when the
      // object itself last changed long ago (and was compacted out of the history).
      from = await this.store.revision();
      const o = await this.get(id, field);
      seen = o.resourceVersion;
      yield build.of(o, "ADDED", o, o.resourceVersion);
    }
    for await (const ev of this.store.of(this.kind).watch(from, signal)) {
      if (ev.type !== "SYNCED" && ev.revision <= seen) continue;
      const f = filterEvent(ev, (o) => o.id === id);
      if (!f) continue;
      yield build.of(ev, f.type, f.object, f.revision);
      if (f.type === "DELETED") return;
    }
  }

  /** A request's filter narrowed to the projects the caller may see (the authorization interceptor's visibleProjectsKey). */
  private visible(filter: RequestFilter, ctx: HandlerContext | undefined): RequestFilter {
    const extra = visibleFilter(this.kind as unknown as Kind<Resource>, ctx, filter.where);
    return extra ? { ...filter, where: { ...filter.where, ...extra } } : filter;
  }

  /** The shared update messages of one Watch RPC's output type. */
  private updatesOf(output: DescMessage): SharedUpdates<T, unknown> {
    let u = this.updates.get(output);
    if (!u) {
      const objField = objectField(output, this.kind as unknown as Kind<Resource>, false);
      u = new SharedUpdates<T, unknown>((f) => create(output, { type: EVENT_TYPE[f.type], ...(f.object ? { [objField.localName]: this.present(f.object) } : {}), resourceVersion: f.revision } as never));
      this.updates.set(output, u);
    }
    return u;
  }
}

/** A query as a string: equal strings are equal queries (a bigint, which JSON lacks, as an object with a key no query has). */
function queryKey(q: object): string {
  return JSON.stringify(q, (_k, v: unknown) => (typeof v === "bigint" ? { "\u0000bigint": String(v) } : v));
}
