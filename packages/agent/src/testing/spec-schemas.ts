import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";

/** A schema node as it appears in the parsed YAML. */
export type Schema = Readonly<Record<string, unknown>>;

/** Checks a value against one of the spec's schemas; returns what is wrong (empty when it conforms). */
export type SchemaCheck = (schema: Schema, value: unknown) => string[];

// Integer formats as the Rust types behind them: a value out of range would fail serde.
const INTEGER_RANGES: Record<string, readonly [number, number]> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-2147483648, 2147483647],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 4294967295],
  uint64: [0, Number.MAX_SAFE_INTEGER],
};

/** Keywords the specs use that only document (OpenAPI's and Swagger's own). */
const ANNOTATIONS = ["example", "discriminator", "xml", "externalDocs"];

/**
 * Validates with ajv against the schemas of a Firecracker (Swagger 2.0) or Cloud
 * Hypervisor (OpenAPI 3.0) spec document. Stricter than the specs read literally, as the
 * VMMs are: both deserialise with serde and Firecracker denies unknown fields, so an
 * object schema that lists its properties accepts no others (an undeclared field is
 * almost always a typo). Every schema is compiled once, on first use.
 */
export function specSchemas(doc: Schema): SchemaCheck {
  const defs = (doc["definitions"] ?? (doc["components"] as Schema | undefined)?.["schemas"] ?? {}) as Record<string, Schema>;
  const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, strictTypes: false });
  ajv.addVocabulary(ANNOTATIONS);
  for (const [name, [min, max]] of Object.entries(INTEGER_RANGES)) ajv.addFormat(name, { type: "number", validate: (x: number) => x >= min && x <= max });
  // Other formats are names only, or (Firecracker's MmdsConfig) a pattern written as a
  // format by mistake: left unchecked, as they always were here.
  for (const name of formatsIn(doc)) if (!(name in INTEGER_RANGES)) ajv.addFormat(name, true);
  ajv.addSchema({ $id: "spec", definitions: Object.fromEntries(Object.entries(defs).map(([k, s]) => [k, closed(s)])) });
  const compiled = new Map<Schema, ValidateFunction>();
  return (schema, value) => {
    let validate = compiled.get(schema);
    if (!validate) compiled.set(schema, (validate = ajv.compile(closed(schema))));
    return validate(value) ? [] : (validate.errors ?? []).map(problem);
  };
}

/**
 * A copy of `schema` as ajv should read it: local references point into the "spec" schema
 * (whose definitions are the document's), a reference's siblings are dropped (neither
 * Swagger 2.0 nor OpenAPI 3.0 applies them), and an object schema that lists properties
 * without saying about others gets additionalProperties: false.
 */
function closed(schema: Schema): Schema {
  if (typeof schema["$ref"] === "string") return { $ref: `spec#/definitions/${schema["$ref"].split("/").pop()}` };
  const out: Record<string, unknown> = { ...schema };
  const props = schema["properties"] as Record<string, Schema> | undefined;
  if (props) {
    out["properties"] = Object.fromEntries(Object.entries(props).map(([k, s]) => [k, closed(s)]));
    if (schema["additionalProperties"] === undefined) out["additionalProperties"] = false;
  }
  if (isSchema(schema["additionalProperties"])) out["additionalProperties"] = closed(schema["additionalProperties"]);
  if (isSchema(schema["items"])) out["items"] = closed(schema["items"]);
  for (const k of ["allOf", "anyOf", "oneOf"]) if (Array.isArray(schema[k])) out[k] = (schema[k] as Schema[]).map(closed);
  return out;
}

/** Every "format" value anywhere in the document. */
function formatsIn(node: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(node)) node.forEach((n) => formatsIn(n, out));
  else if (isSchema(node)) for (const [k, v] of Object.entries(node)) k === "format" && typeof v === "string" ? out.add(v) : formatsIn(v, out);
  return out;
}

function isSchema(v: unknown): v is Schema {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** One ajv error in words that name the spec's rule and where it failed ($.a.b[0]). */
function problem(e: ErrorObject): string {
  const at = "$" + e.instancePath.split("/").slice(1).map((seg) => (/^\d+$/.test(seg) ? `[${seg}]` : `.${seg.replace(/~1/g, "/").replace(/~0/g, "~")}`)).join("");
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case "required":
      return `${at}: missing required property "${String(p["missingProperty"])}"`;
    case "additionalProperties":
      return `${at}.${String(p["additionalProperty"])}: property not declared by the spec`;
    case "type":
      return `${at}: expected ${String(p["type"])}, got ${kind(e.data)}`;
    case "enum":
      return `${at}: ${JSON.stringify(e.data)} is not one of ${JSON.stringify(p["allowedValues"])}`;
    case "minimum":
      return `${at}: ${String(e.data)} is below the minimum ${String(p["limit"])}`;
    case "maximum":
      return `${at}: ${String(e.data)} is above the maximum ${String(p["limit"])}`;
    case "format":
      return `${at}: ${String(e.data)} does not fit ${String(p["format"])}`;
    default:
      return `${at}: ${e.message ?? "invalid"} (${e.keyword})`;
  }
}

function kind(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return Number.isInteger(value) ? "integer" : typeof value;
}
