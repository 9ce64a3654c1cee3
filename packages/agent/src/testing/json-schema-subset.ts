/**
 * A validator for the subset of JSON Schema that the Firecracker (Swagger 2.0) and Cloud
 * Hypervisor (OpenAPI 3.0) specs use: type, required, properties, items, enum, $ref,
 * additionalProperties, minimum/maximum and the integer formats. Written here because the
 * stand-in VMM must judge every request the backends send by the spec alone.
 */

/** A schema node as it appears in the parsed YAML. */
export type Schema = Readonly<Record<string, unknown>>;

/** Resolves a local "$ref" such as "#/definitions/Drive" to its schema. */
export type RefResolver = (ref: string) => Schema;

// Integer formats as the Rust types behind them; a value out of range would fail serde.
const integerRanges: Record<string, readonly [number, number]> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-2147483648, 2147483647],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 4294967295],
  uint64: [0, Number.MAX_SAFE_INTEGER],
};

/**
 * Returns what is wrong with `value` (empty when it conforms). `strict` also rejects
 * object properties the schema does not declare: both VMMs deserialise with serde and
 * Firecracker denies unknown fields, so an undeclared field is almost always a typo.
 */
export function validateSchema(schema: Schema, value: unknown, resolve: RefResolver, strict: boolean, at = "$"): string[] {
  if (typeof schema.$ref === "string") return validateSchema(resolve(schema.$ref), value, resolve, strict, at);
  const errors: string[] = [];
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) {
    errors.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  const type = schema.type;
  if (type !== undefined && !hasType(value, String(type))) {
    errors.push(`${at}: expected ${String(type)}, got ${describe(value)}`);
    return errors;
  }
  if (typeof value === "number") errors.push(...checkNumber(schema, value, at));
  if (Array.isArray(value) && schema.items !== undefined) {
    value.forEach((item, i) => errors.push(...validateSchema(schema.items as Schema, item, resolve, strict, `${at}[${i}]`)));
  }
  if (isObject(value)) errors.push(...checkObject(schema, value, resolve, strict, at));
  return errors;
}

function checkNumber(schema: Schema, value: number, at: string): string[] {
  const errors: string[] = [];
  if (typeof schema.minimum === "number" && value < schema.minimum) errors.push(`${at}: ${value} is below the minimum ${schema.minimum}`);
  if (typeof schema.maximum === "number" && value > schema.maximum) errors.push(`${at}: ${value} is above the maximum ${schema.maximum}`);
  const range = typeof schema.format === "string" ? integerRanges[schema.format] : undefined;
  if (range && (value < range[0] || value > range[1])) errors.push(`${at}: ${value} does not fit ${String(schema.format)}`);
  return errors;
}

function checkObject(schema: Schema, value: Record<string, unknown>, resolve: RefResolver, strict: boolean, at: string): string[] {
  const errors: string[] = [];
  const properties = (schema.properties ?? {}) as Record<string, Schema>;
  for (const name of (schema.required ?? []) as string[]) {
    if (!(name in value)) errors.push(`${at}: missing required property "${name}"`);
  }
  const extra = schema.additionalProperties;
  for (const [name, v] of Object.entries(value)) {
    const where = `${at}.${name}`;
    if (name in properties) errors.push(...validateSchema(properties[name], v, resolve, strict, where));
    else if (isObject(extra)) errors.push(...validateSchema(extra, v, resolve, strict, where));
    else if (extra === false || (strict && extra === undefined && schema.properties !== undefined)) {
      errors.push(`${where}: property not declared by the spec`);
    }
  }
  return errors;
}

function hasType(value: unknown, type: string): boolean {
  switch (type) {
    case "object":
      return isObject(value);
    case "array":
      return Array.isArray(value);
    case "string":
      return typeof value === "string";
    case "boolean":
      return typeof value === "boolean";
    case "integer":
      return Number.isInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    default:
      return false;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return Number.isInteger(value) ? "integer" : typeof value;
}
