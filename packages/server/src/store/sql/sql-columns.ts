import type { ColumnType, Kind, Resource } from "@quantix/core";
import type { Param } from "./sql-driver.js";

/** The SQL type of a kind's column type (casts of parameters and cursors). */
export function sqlType(t: ColumnType): "text" | "int" | "bigint" | "boolean" {
  return t === "bool" ? "boolean" : t;
}

/**
 * The indexed columns of an object and their values, besides id, resource_version and
 * data: unique_key, labels (when the kind has them), and each declared field's column.
 * Column names come from the kind's declaration (constants), never from input.
 */
export function columnsOf(kind: Kind<Resource>, o: Resource): Record<string, Param> {
  const cols: Record<string, Param> = { unique_key: kind.unique ? kind.unique.key(o) : null };
  if (kind.labels) cols["labels"] = JSON.stringify(kind.labels(o));
  for (const f of Object.values(kind.fields)) cols[f.column] = f.value(o);
  return cols;
}

/** The SQL type of each column columnsOf names, for the kind (cached per kind). */
export function columnTypesOf(kind: Kind<Resource>): ReadonlyMap<string, string> {
  let types = COLUMN_TYPES.get(kind);
  if (!types) {
    types = new Map<string, string>([["unique_key", "text"], ["labels", "jsonb"]]);
    for (const f of Object.values(kind.fields)) types.set(f.column, sqlType(f.type));
    COLUMN_TYPES.set(kind, types);
  }
  return types;
}
const COLUMN_TYPES = new WeakMap<Kind<Resource>, Map<string, string>>();
