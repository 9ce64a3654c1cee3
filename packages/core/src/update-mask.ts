import { clone, create, type DescField, type DescMessage } from "@bufbuild/protobuf";
import type { FieldViolation } from "./errors.js";

/**
 * Copies the fields named by `paths` (proto field names, dot-separated, e.g.
 * `spec.memory.size_mib`) from `source` to `target`, both messages of `schema`. A path
 * may end at any field but may not pass through a repeated or map field. A field absent
 * from `source` is cleared in `target`. `allowed` restricts the paths to prefixes a
 * caller may write. Returns the violations; on any violation, `target` is unchanged.
 */
export function applyUpdateMask(
  schema: DescMessage,
  target: Record<string, unknown>,
  source: Record<string, unknown>,
  paths: readonly string[],
  allowed: (path: string) => boolean,
): FieldViolation[] {
  const violations: FieldViolation[] = [];
  const resolved: DescField[][] = [];
  paths.forEach((path, i) => {
    const fields = resolvePath(schema, path);
    if (typeof fields === "string") {
      violations.push({ field: `update_mask.paths[${i}]`, reason: "UNKNOWN_PATH", description: `'${path}' ${fields}` });
    } else if (!allowed(path)) {
      violations.push({ field: `update_mask.paths[${i}]`, reason: "NOT_WRITABLE", description: `'${path}' cannot be changed by this request` });
    } else {
      resolved.push(fields);
    }
  });
  if (violations.length > 0) return violations;
  for (const fields of resolved) copyPath(schema, target, source, fields);
  return violations;
}

function resolvePath(schema: DescMessage, path: string): DescField[] | string {
  const out: DescField[] = [];
  let msg: DescMessage | undefined = schema;
  for (const name of path.split(".")) {
    if (!msg) return "goes through a field that is not a message";
    const field: DescField | undefined = msg.fields.find((f) => f.name === name);
    if (!field) return `is not a field of ${msg.typeName}`;
    out.push(field);
    msg = field.fieldKind === "message" ? field.message : undefined;
  }
  return out.length > 0 ? out : "is empty";
}

function copyPath(schema: DescMessage, target: Record<string, unknown>, source: Record<string, unknown> | undefined, fields: DescField[]): void {
  let t = target;
  let s = source;
  let msg = schema;
  for (const [i, f] of fields.entries()) {
    const last = i === fields.length - 1;
    // A oneof member lives in its oneof's { case, value } (protobuf-es v2).
    const oneof = f.oneof;
    const read = (o: Record<string, unknown> | undefined): unknown => {
      if (!oneof) return o?.[f.localName];
      const sel = o?.[oneof.localName] as { case?: string; value?: unknown } | undefined;
      return sel?.case === f.localName ? sel.value : undefined;
    };
    if (last) {
      const value = s === undefined ? (oneof ? undefined : create(msg)[f.localName as keyof object]) : read(s) === undefined && oneof ? undefined : copyValue(f, read(s));
      if (oneof) {
        // An absent member clears the oneof only when it is the one set (another member stays).
        if (value !== undefined) t[oneof.localName] = { case: f.localName, value };
        else if ((t[oneof.localName] as { case?: string } | undefined)?.case === f.localName) t[oneof.localName] = { case: undefined };
      }
      else t[f.localName] = value;
      return;
    }
    if (f.fieldKind !== "message") return;
    if (oneof) {
      const sel = t[oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (sel?.case !== f.localName) t[oneof.localName] = { case: f.localName, value: create(f.message) };
      t = (t[oneof.localName] as { value: Record<string, unknown> }).value;
    } else {
      if (t[f.localName] === undefined) t[f.localName] = create(f.message);
      t = t[f.localName] as Record<string, unknown>;
    }
    s = read(s) as Record<string, unknown> | undefined;
    msg = f.message;
  }
}

function copyValue(f: DescField, value: unknown): unknown {
  switch (f.fieldKind) {
    case "message":
      return value === undefined ? undefined : clone(f.message, value as never);
    case "list":
      return f.listKind === "message" ? (value as never[]).map((x) => clone(f.message, x)) : [...(value as unknown[])];
    case "map": {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(value as Record<string, unknown>)) {
        out[k] = f.mapKind === "message" ? clone(f.message, x as never) : x;
      }
      return out;
    }
    default:
      return value;
  }
}
