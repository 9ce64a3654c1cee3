import { matchesLabels } from "../labels.js";
import type { Cursor, Order } from "../pagination.js";
import { QuantixError } from "../errors.js";
import type { FieldDecl, FieldValue, Kind, Resource } from "./kind.js";

/** A filter on one field: one value (eq) or any of several (in). */
export type FilterValue = FieldValue | readonly FieldValue[];

/**
 * A filter and a page of one kind, in the terms of its declaration: `where` names
 * declared fields, or `id` (every kind's key: one id, or any of a list; an empty list
 * matches nothing). Every store gives it the same meaning (matchesQuery).
 */
export interface Query {
  readonly where?: Readonly<Record<string, FilterValue>> | undefined;
  /** Every pair must be among the object's labels. */
  readonly labels?: Readonly<Record<string, string>> | undefined;
  /** Numeric fields within bounds: at least `min`, less than `max` (either may be absent). */
  readonly range?: Readonly<Record<string, Range>> | undefined;
  readonly order: Order<string>;
  readonly after?: Cursor | undefined;
  /** At most this many items; 0 returns only the count. */
  readonly limit: number;
  /** false lets the store skip counting matches (a later page whose total is known): totalCount is then -1. */
  readonly countTotal?: boolean;
}

/** Bounds of a numeric field: min inclusive, max exclusive. */
export interface Range {
  readonly min?: number | undefined;
  readonly max?: number | undefined;
}

/** Whether an object matches a query's filter (all conditions hold). */
export function matchesQuery<T extends Resource>(kind: Kind<T>, o: T, q: Pick<Query, "where" | "labels" | "range">): boolean {
  for (const name in q.range ?? {}) {
    const r = q.range![name]!;
    const have = fieldOf(kind, name).value(o) as number;
    if ((r.min !== undefined && have < r.min) || (r.max !== undefined && have >= r.max)) return false;
  }
  if (q.where) {
    for (const name in q.where) {
      const want = q.where[name]!;
      const have = whereFieldOf(kind, name).value(o);
      if (Array.isArray(want) ? !want.includes(have) : have !== want) return false;
    }
  }
  if (q.labels && Object.keys(q.labels).length > 0) return kind.labels ? matchesLabels(kind.labels(o), q.labels) : false;
  return true;
}

/** The value an order field gives an object, as page cursors carry it. */
export function sortKeyOf<T extends Resource>(kind: Kind<T>, o: T, field: string): string | number {
  const v = fieldOf(kind, field).value(o);
  return typeof v === "boolean" ? Number(v) : v;
}

/**
 * The id, as a where names it: every kind has it and every store keys objects by it (the
 * SQL tables' `id` column), so it needs no declaration. It is no order field: pages are
 * ordered by declared fields, with the id only breaking ties.
 */
export const ID_FIELD: FieldDecl<Resource> = { column: "id", type: "text", value: (o) => o.id, filter: "in" };

/** The field a where names: `id` (ID_FIELD) or a declared one. */
export function whereFieldOf<T extends Resource>(kind: Kind<T>, name: string): FieldDecl<T> {
  return name === "id" ? (ID_FIELD as FieldDecl<T>) : fieldOf(kind, name);
}

/** A declared field; an undeclared name is a programming error (INTERNAL), never user input. */
export function fieldOf<T extends Resource>(kind: Kind<T>, name: string) {
  const f = kind.fields[name];
  if (!f) throw new QuantixError("internal", `kind ${kind.name} has no field '${name}'`);
  return f;
}
