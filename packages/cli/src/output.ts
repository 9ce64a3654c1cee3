import { toJson, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import Table from "cli-table3";
import { stringify } from "yaml";
import { UsageError } from "./errors.js";

export const OUTPUTS = ["table", "wide", "json", "yaml", "name"] as const;
export type OutputFormat = (typeof OUTPUTS)[number];

export function outputFormat(v: string | undefined): OutputFormat {
  const f = v ?? "table";
  if (!(OUTPUTS as readonly string[]).includes(f)) throw new UsageError(`-o ${f}: choose one of ${OUTPUTS.join(", ")}`);
  return f as OutputFormat;
}

/** How a column's value is shown: as is, as a count of a list, as an age, as MiB/GiB/bytes. */
export type Format = "age" | "count" | "mib" | "gib" | "bytes" | "time";

export interface Column {
  readonly header: string;
  /** A path of field local names into the message: "status.state". */
  readonly path: string;
  readonly format?: Format;
  /** The field holds the id of this resource (e.g. "node"): tables show its name instead. */
  readonly ref?: string;
}

const col = (header: string, path: string, format?: Format): Column => (format ? { header, path, format } : { header, path });
/** A column holding a node's id, shown as the node's hostname. */
const nodeCol = (header: string, path: string): Column => ({ header, path, ref: "node" });
export { col, nodeCol };

/** A message's JSON form, as the API's JSON mapping gives it (int64 as strings, enums by name). */
export function jsonOf(schema: DescMessage, msg: Message): unknown {
  return toJson(schema, msg, { alwaysEmitImplicit: false });
}

function scalarText(field: DescField | undefined, v: unknown): string {
  if (v === undefined || v === null) return "";
  if (field?.fieldKind === "enum" || (field?.fieldKind === "list" && field.listKind === "enum") || (field?.fieldKind === "map" && field.mapKind === "enum")) {
    const e = field.enum!;
    const val = e.values.find((x) => x.number === v);
    return val ? val.localName : String(v);
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "bigint" || typeof v === "number") return String(v);
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === "object" && (v as { $typeName?: string }).$typeName === "google.protobuf.Timestamp") return new Date(timestampMs(v as never)).toISOString();
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? String(x) : x));
}

/** The raw value at a path, and the field that holds it. */
export function valueAt(schema: DescMessage, msg: Message, path: string): { field: DescField | undefined; value: unknown } {
  let desc: DescMessage | undefined = schema;
  let cur: unknown = msg;
  let field: DescField | undefined;
  for (const seg of path.split(".")) {
    if (cur === undefined || cur === null) return { field, value: undefined };
    field = desc?.fields.find((f) => f.localName === seg);
    if (field?.oneof) {
      // A oneof member lives under the oneof's name as {case, value}.
      const o = (cur as Record<string, { case?: string; value?: unknown } | undefined>)[field.oneof.localName];
      cur = o?.case === field.localName ? o.value : undefined;
    } else cur = (cur as Record<string, unknown>)[seg];
    desc = field?.fieldKind === "message" ? field.message : undefined;
  }
  return { field, value: cur };
}

function age(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)}${units[i]}`;
}

export function cellText(schema: DescMessage, msg: Message, c: Column, now = Date.now()): string {
  const { field, value } = valueAt(schema, msg, c.path);
  if (value === undefined || value === null) return "";
  switch (c.format) {
    case "count":
      return Array.isArray(value) ? String(value.length) : "";
    case "age":
      return typeof value === "object" ? age(timestampMs(value as never), now) : "";
    case "time":
      return typeof value === "object" ? new Date(timestampMs(value as never)).toISOString() : "";
    case "mib":
      return Number(value) === 0 ? "" : bytes(Number(value) * 1024 * 1024);
    case "gib":
      return Number(value) === 0 ? "" : bytes(Number(value) * 1024 ** 3);
    case "bytes":
      return bytes(Number(value));
  }
  if (Array.isArray(value)) return value.map((v) => scalarText(field, v)).join(",");
  if (field?.fieldKind === "map") return Object.entries(value as Record<string, unknown>).map(([k, v]) => `${k}=${scalarText(field, v)}`).join(",");
  return scalarText(field, value);
}

/**
 * The shortest prefix of each id that no other id in the set shares, at least `min`
 * characters (as git abbreviates hashes).
 */
export function shortIds(ids: readonly string[], min = 8): Map<string, string> {
  const out = new Map<string, string>();
  const sorted = [...new Set(ids)].sort();
  for (let i = 0; i < sorted.length; i++) {
    const id = sorted[i]!;
    let need = min;
    for (const other of [sorted[i - 1], sorted[i + 1]]) {
      if (!other) continue;
      let common = 0;
      while (common < id.length && id[common] === other[common]) common++;
      need = Math.max(need, common + 1);
    }
    out.set(id, id.slice(0, Math.min(need, id.length)));
  }
  return out;
}

/** A borderless table, as kubectl and incus print them. */
export function table(head: string[], rows: string[][], colWidths?: number[]): string {
  const t = new Table({
    head,
    chars: { top: "", "top-mid": "", "top-left": "", "top-right": "", bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "", left: "", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "", middle: "   " },
    style: { head: [], border: [], "padding-left": 0, "padding-right": 0, compact: true },
    ...(colWidths ? { colWidths } : {}),
    wordWrap: false,
  });
  t.push(...rows);
  return t
    .toString()
    .split("\n")
    .map((l) => l.trimEnd())
    .join("\n");
}

/** Plain data (a message's JSON form, or a list of them) as JSON or YAML text. */
export function dataText(format: "json" | "yaml", data: unknown): string {
  return format === "json" ? `${JSON.stringify(data, null, 2)}\n` : stringify(data, { lineWidth: 0 });
}

/** Flattens a JSON form into field/value rows for `show` (nested maps by dotted path; lists inline). */
export function flatten(value: unknown, prefix = "", out: [string, string][] = []): [string, string][] {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && prefix) out.push([prefix, "{}"]);
    for (const [k, v] of entries) flatten(v, prefix ? `${prefix}.${k}` : k, out);
    return out;
  }
  if (Array.isArray(value)) {
    if (value.every((x) => typeof x !== "object" || x === null)) out.push([prefix, value.join(", ")]);
    else value.forEach((v, i) => flatten(v, `${prefix}[${i}]`, out));
    return out;
  }
  out.push([prefix, String(value)]);
  return out;
}
