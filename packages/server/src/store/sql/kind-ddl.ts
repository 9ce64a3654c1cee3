import type { Kind, Resource } from "@quantix/core";
import { sqlType } from "./sql-columns.js";

/**
 * The indexes a kind's declaration implies, as column lists: one per order field (with
 * id, for keyset pages), one per equality filter and order field (a filtered page in
 * order), plus the GIN index on labels and the unique key's. Boolean filters get none
 * (two values do not make a useful index). The schema test checks that every kind's
 * table has them; kindTableDdl writes them for a new kind's migration.
 */
export function impliedIndexes(kind: Kind<Resource>): string[][] {
  const order = kind.orderBy.map((f) => kind.fields[f]!.column);
  const out: string[][] = order.map((o) => [o, "id"]);
  for (const f of Object.values(kind.fields)) {
    if (f.filter !== "eq" || f.type === "bool") continue;
    for (const o of order) if (o !== f.column) out.push([f.column, o, "id"]);
  }
  return out;
}

/** The columns of a kind's table and their SQL types. */
export function impliedColumns(kind: Kind<Resource>): Record<string, string> {
  const cols: Record<string, string> = { id: "text", unique_key: "text" };
  if (kind.labels) cols["labels"] = "jsonb";
  for (const f of Object.values(kind.fields)) cols[f.column] = sqlType(f.type);
  cols["resource_version"] = "bigint";
  cols["data"] = "bytea";
  return cols;
}

/**
 * The CREATE TABLE and CREATE INDEX statements of a new kind, derived from its
 * declaration (`npm run schema -- <table>` prints them): paste them into the kind's
 * migration, where they stay as written (a shipped migration never changes).
 */
export function kindTableDdl(kind: Kind<Resource>): string {
  const t = kind.table;
  const lines = [`id text COLLATE "C" PRIMARY KEY`, `unique_key text COLLATE "C"`];
  if (kind.labels) lines.push("labels jsonb NOT NULL");
  for (const f of Object.values(kind.fields)) lines.push(`${f.column} ${sqlType(f.type)}${f.type === "text" ? ` COLLATE "C"` : ""} NOT NULL`);
  lines.push("resource_version bigint NOT NULL", "data bytea NOT NULL", `CONSTRAINT ${t}_unique_key UNIQUE (unique_key)`);
  const out = [`CREATE TABLE ${t} (\n  ${lines.join(",\n  ")}\n);`];
  for (const cols of impliedIndexes(kind)) out.push(`CREATE INDEX ${t}_by_${cols.filter((c) => c !== "id").join("_")} ON ${t} (${cols.join(", ")});`);
  if (kind.labels) out.push(`CREATE INDEX ${t}_labels ON ${t} USING gin (labels jsonb_path_ops);`);
  return out.join("\n");
}
