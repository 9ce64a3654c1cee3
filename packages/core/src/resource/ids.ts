import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import type { FieldViolation } from "../errors.js";
import { Violations } from "../violations.js";
import { checkId, PROJECT_ID_FORMAT, RESOURCE_ID_FORMAT, type IdFormat } from "./id-format.js";
import type { Kind, Resource } from "./kind.js";

/** One id field of a request message, found by reflection. */
export interface RequestIdField {
  readonly field: DescField;
  readonly format: IdFormat;
  /** Whether the field names the request's subject, which must be given. */
  readonly required: boolean;
}

/**
 * The id fields of a request about objects of `kind`, by their names: the subject (`id`,
 * or `<kind>_id`, e.g. `vm_id` of WatchVM) in the kind's id format; `project_id` in the
 * project format; any other string `*_id` and repeated string `*_ids` (references to
 * other objects) in the resource format. `subjectRequired` is false for requests that
 * filter a set (List, Watch of many), where an empty id filters nothing; a reference may
 * always be empty (the handler says whether it must be given).
 */
export function requestIdFields(kind: Kind<Resource>, schema: DescMessage, subjectRequired: boolean): RequestIdField[] {
  const subject = new Set(["id", `${kind.name.toLowerCase()}_id`]);
  const out: RequestIdField[] = [];
  for (const f of schema.fields) {
    if (f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && (f.name === "id" || f.name.endsWith("_id"))) {
      const isSubject = subject.has(f.name);
      const format = f.name === "project_id" ? PROJECT_ID_FORMAT : isSubject ? (kind.idFormat ?? RESOURCE_ID_FORMAT) : RESOURCE_ID_FORMAT;
      out.push({ field: f, format, required: isSubject && subjectRequired });
    } else if (f.fieldKind === "list" && f.listKind === "scalar" && f.scalar === ScalarType.STRING && f.name.endsWith("_ids")) {
      out.push({ field: f, format: RESOURCE_ID_FORMAT, required: false });
    }
  }
  return out;
}

/** The violations of a request's id fields (`req` is the message, by local names). */
export function requestIdViolations(fields: readonly RequestIdField[], req: Record<string, unknown>): FieldViolation[] {
  const v = new Violations();
  for (const { field, format, required } of fields) {
    const value = req[field.localName];
    if (Array.isArray(value)) value.forEach((x, i) => checkId(v, `${field.name}[${i}]`, x as string, format, false));
    else checkId(v, field.name, (value ?? "") as string, format, required);
  }
  return v.list;
}
