import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { checkId, CONTROL_CHARS, PROJECT_ID_FORMAT, QuantixError, RESOURCE_ID_FORMAT, validateLabels, throwIfViolations, Violations, type FieldValue, type FilterValue, type Kind, type Query, type Range, type Resource } from "@quantix/core";

/** Request fields that page or resume rather than filter. */
const NOT_FILTERS = new Set(["page_size", "page_token", "order_by", "resource_version"]);

/**
 * How a List or Watch request field that is not named after a kind field filters: a
 * where of its own (`schedulable_only`), or a lookup (LookupFilter).
 */
export type CustomFilter = ((value: unknown) => Readonly<Record<string, FilterValue>>) | LookupFilter;

/**
 * A List request field that filters by what another object says (ListSecurityGroups'
 * port_id: the groups that port uses), read from the store when the List is served,
 * within the projects the List covers; it may refuse (NOT_FOUND for an object outside
 * them). Page tokens are bound to the value asked, not to what it gave: the next page
 * reads the object again. Watch requests have none (a lookup made once would go stale
 * while the watch runs): a Watch request field with one is refused when routes are built.
 */
export interface LookupFilter {
  readonly lookup: (value: unknown, scope: ListScope) => Promise<Readonly<Record<string, FilterValue>>>;
}

/** The projects a List covers: its project_id when given, else the caller's visible projects (undefined: every project). */
export interface ListScope {
  readonly projects: readonly string[] | undefined;
}

/** Whether a custom filter is a lookup. */
export function isLookup(c: CustomFilter | undefined): c is LookupFilter {
  return typeof c === "object" && c !== null;
}

/** A filter read from a request: the store's query part, and the canonical form page tokens are bound to. */
export interface RequestFilter {
  readonly where: Record<string, FilterValue>;
  readonly labels: Record<string, string> | undefined;
  /** Time bounds (`<field>_from`, `<field>_to` request fields), in milliseconds. */
  readonly range?: Record<string, Range>;
  /** The values asked of lookup filters (by request field name), not yet resolved into `where` (resolveLookups). */
  readonly lookups?: Record<string, FieldValue>;
}

/**
 * Reads the filter a List or Watch request asks for, by reflection on the request's
 * message: `labels` is the labels filter; a field named after one of the kind's fields
 * (or its plural, for a repeated field: `states` for `state`) filters it (one value: eq;
 * several: in); a Timestamp field `<f>_from` or `<f>_to`, where `f` is a time field of
 * the kind, bounds it (from inclusive, to exclusive); `custom` maps the others
 * (`schedulable_only`). Empty values filter
 * nothing. Enum values must be known, ids well formed (INVALID_ARGUMENT naming the
 * field). A request field the kind cannot filter on is a programming error, found when
 * the routes are built (`filterFields`).
 */
export function filterOf(kind: Kind<Resource>, schema: DescMessage, req: Record<string, unknown>, custom: Readonly<Record<string, CustomFilter>> = {}): RequestFilter {
  const v = new Violations();
  const where: Record<string, FilterValue> = {};
  let labels: Record<string, string> | undefined;
  const range: Record<string, { min?: number; max?: number }> = {};
  const lookups: Record<string, FieldValue> = {};
  for (const f of filterFields(kind, schema, custom)) {
    const value = req[f.localName];
    if (f.name === "labels") {
      const map = value as Record<string, string>;
      // Label filters follow the rules of labels: no control characters reach a store's query.
      validateLabels(v, "labels", map);
      if (Object.keys(map).length > 0) labels = map;
      continue;
    }
    const bound = timeBound(kind, f);
    if (bound) {
      const ts = value as { seconds: bigint; nanos: number } | undefined;
      if (ts) {
        const ms = Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
        range[bound.field] = { ...range[bound.field], [bound.side]: ms };
      }
      continue;
    }
    const c = custom[f.name];
    if (isLookup(c)) {
      if (value !== "" && value !== 0 && value !== false && value !== undefined) lookups[f.name] = value as FieldValue;
      continue;
    }
    if (c) {
      Object.assign(where, c(value));
      continue;
    }
    const target = kindField(kind, f)!;
    if (f.fieldKind === "list") {
      const list = value as FieldValue[];
      if (list.length === 0) continue;
      list.forEach((x, i) => check(v, f, x, `${f.name}[${i}]`));
      where[target] = [...list].sort();
    } else if (value !== "" && value !== 0 && value !== false && value !== undefined) {
      check(v, f, value as FieldValue, f.name);
      where[target] = value as FieldValue;
    }
  }
  for (const [field, r] of Object.entries(range)) {
    if (r.min !== undefined && r.max !== undefined && r.min > r.max) v.add(`${field}_to`, "OUT_OF_RANGE", `must not be before ${field}_from`);
  }
  throwIfViolations(v.list);
  return { where, labels, ...(Object.keys(range).length > 0 ? { range } : {}), ...(Object.keys(lookups).length > 0 ? { lookups } : {}) };
}

/**
 * `filter` with its lookups (LookupFilter) made, in the projects its where covers: what
 * each gives joins the where (two that give the same field is a programming error).
 */
export async function resolveLookups(filter: RequestFilter, custom: Readonly<Record<string, CustomFilter>>): Promise<RequestFilter> {
  if (!filter.lookups) return filter;
  const project = filter.where["project_id"];
  const scope: ListScope = { projects: project === undefined ? undefined : Array.isArray(project) ? (project as string[]) : [project as string] };
  const where = { ...filter.where };
  for (const [field, value] of Object.entries(filter.lookups)) {
    const c = custom[field];
    if (!isLookup(c)) throw new QuantixError("internal", `request field ${field} has no lookup`);
    for (const [name, v] of Object.entries(await c.lookup(value, scope))) {
      if (name in where) throw new QuantixError("internal", `the lookup of ${field} filters ${name}, which the request filters already`);
      where[name] = v;
    }
  }
  return { where, labels: filter.labels, ...(filter.range ? { range: filter.range } : {}) };
}

/** The time field a `<f>_from` / `<f>_to` Timestamp request field bounds, and which side. */
function timeBound(kind: Kind<Resource>, f: DescField): { field: string; side: "min" | "max" } | undefined {
  if (f.fieldKind !== "message" || f.message.typeName !== "google.protobuf.Timestamp") return undefined;
  const m = /^(.+)_(from|to)$/.exec(f.name);
  if (!m || kind.fields[m[1]!]?.type !== "bigint") return undefined;
  return { field: m[1]!, side: m[2] === "from" ? "min" : "max" };
}

/** The request's filtering fields, checked against the kind once (a field it cannot filter on throws). */
export function filterFields(kind: Kind<Resource>, schema: DescMessage, custom: Readonly<Record<string, CustomFilter>> = {}): DescField[] {
  const out: DescField[] = [];
  for (const f of schema.fields) {
    if (NOT_FILTERS.has(f.name)) continue;
    if (f.name === "labels" || custom[f.name] || kindField(kind, f) || timeBound(kind, f)) {
      out.push(f);
      continue;
    }
    throw new QuantixError("internal", `${schema.typeName}.${f.name} filters nothing of kind ${kind.name}: declare the field or a custom filter`);
  }
  return out;
}

/** The query parts of a filter. */
export function queryOf(filter: RequestFilter): Pick<Query, "where" | "labels" | "range"> {
  return { where: filter.where, labels: filter.labels, range: filter.range };
}

function kindField(kind: Kind<Resource>, f: DescField): string | undefined {
  if (kind.fields[f.name]?.filter) return f.name;
  if (f.fieldKind !== "list") return undefined;
  const singular = f.name.endsWith("es") && kind.fields[f.name.slice(0, -2)]?.filter ? f.name.slice(0, -2) : f.name.slice(0, -1);
  return kind.fields[singular]?.filter === "in" ? singular : undefined;
}

function check(v: Violations, f: DescField, value: FieldValue, path: string): void {
  if (f.enum) {
    if (!f.enum.values.some((e) => e.number === value)) v.add(path, "INVALID_ENUM", `unknown value ${String(value)}`);
    return;
  }
  if (typeof value !== "string") return;
  if (f.name.endsWith("_id")) checkId(v, path, value, f.name === "project_id" ? PROJECT_ID_FORMAT : RESOURCE_ID_FORMAT);
  else if (value.length > 256) v.add(path, "INVALID_LENGTH", "must be at most 256 characters long");
  else if (CONTROL_CHARS.test(value)) v.add(path, "INVALID_FORMAT", "must not contain control characters");
}
