import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { specSchemas, type Schema, type SchemaCheck } from "./spec-schemas.js";

/** Which VMM a spec (and a stand-in) speaks for. */
export type VmmFlavor = "firecracker" | "cloud-hypervisor";

/** One operation of the spec, reduced to what the stand-in checks. */
export interface SpecOperation {
  /** The spec's path template, e.g. "/drives/{drive_id}". */
  readonly template: string;
  readonly method: string;
  /** The JSON body's schema; undefined when the operation takes no body. */
  readonly bodySchema: Schema | undefined;
  readonly bodyRequired: boolean;
  /** Response schemas by status ("204", "default"); null for a documented status without a body. */
  readonly responses: ReadonlyMap<string, Schema | null>;
}

/** The result of looking a request up in the spec. */
export type SpecMatch =
  | { readonly kind: "ok"; readonly op: SpecOperation; readonly params: Readonly<Record<string, string>> }
  | { readonly kind: "unknown-path" }
  | { readonly kind: "wrong-method"; readonly allowed: readonly string[] };

/** A parsed VMM API spec: Swagger 2.0 (Firecracker) or OpenAPI 3 (Cloud Hypervisor). */
export interface ApiSpec {
  /** The prefix every path is served under: "" for Firecracker, "/api/v1" for Cloud Hypervisor. */
  readonly prefix: string;
  find(method: string, path: string): SpecMatch;
  /** Checks a value against one of this spec's schemas (a body or a reply); returns what is wrong. */
  readonly validate: SchemaCheck;
}

const files: Record<VmmFlavor, string> = { firecracker: "firecracker.yaml", "cloud-hypervisor": "cloud-hypervisor.yaml" };

/** Loads the vendored spec of `flavor` from third_party/specs. */
export function loadApiSpec(flavor: VmmFlavor): ApiSpec {
  const url = new URL(`../../../../third_party/specs/${files[flavor]}`, import.meta.url);
  return apiSpecFromDocument(parse(readFileSync(url, "utf8")) as Schema);
}

/** Builds an {@link ApiSpec} from a parsed spec document. */
export function apiSpecFromDocument(doc: Schema): ApiSpec {
  const swagger = doc.swagger !== undefined;
  const servers = (doc.servers ?? []) as { url: string }[];
  const base = swagger ? String(doc.basePath ?? "/") : new URL(servers[0]?.url ?? "http://localhost/").pathname;
  const prefix = base.replace(/\/$/, "");
  const operations: SpecOperation[] = [];
  for (const [template, item] of Object.entries((doc.paths ?? {}) as Record<string, Record<string, Schema>>)) {
    for (const [method, op] of Object.entries(item)) {
      if (method === "parameters") continue;
      operations.push(swagger ? swaggerOperation(template, method, op) : openApiOperation(template, method, op));
    }
  }
  return { prefix, validate: specSchemas(doc), find: (method, path) => find(operations, prefix, method.toLowerCase(), path) };
}

function find(operations: readonly SpecOperation[], prefix: string, method: string, path: string): SpecMatch {
  if (!path.startsWith(prefix + "/")) return { kind: "unknown-path" };
  const rest = path.slice(prefix.length);
  const allowed: string[] = [];
  for (const op of operations) {
    const params = matchTemplate(op.template, rest);
    if (!params) continue;
    if (op.method === method) return { kind: "ok", op, params };
    allowed.push(op.method.toUpperCase());
  }
  return allowed.length > 0 ? { kind: "wrong-method", allowed } : { kind: "unknown-path" };
}

function matchTemplate(template: string, path: string): Record<string, string> | undefined {
  const t = template.split("/");
  const p = path.split("/");
  if (t.length !== p.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < t.length; i++) {
    const m = /^\{(.+)\}$/.exec(t[i]);
    if (m && p[i] !== "") params[m[1]] = decodeURIComponent(p[i]);
    else if (t[i] !== p[i]) return undefined;
  }
  return params;
}

function swaggerOperation(template: string, method: string, op: Schema): SpecOperation {
  const body = ((op.parameters ?? []) as Schema[]).find((p) => p.in === "body");
  const responses = new Map<string, Schema | null>();
  for (const [code, r] of Object.entries((op.responses ?? {}) as Record<string, Schema>)) {
    responses.set(String(code), (r.schema as Schema | undefined) ?? null);
  }
  return { template, method, bodySchema: body?.schema as Schema | undefined, bodyRequired: body?.required === true, responses };
}

function openApiOperation(template: string, method: string, op: Schema): SpecOperation {
  const body = op.requestBody as Schema | undefined;
  const json = (schemaOf: Schema | undefined): Schema | undefined =>
    ((schemaOf?.content as Record<string, Schema> | undefined)?.["application/json"]?.schema as Schema | undefined) ?? undefined;
  const responses = new Map<string, Schema | null>();
  // Response keys are integers except in a few operations where they are quoted strings.
  for (const [code, r] of Object.entries((op.responses ?? {}) as Record<string, Schema>)) responses.set(String(code), json(r) ?? null);
  return { template, method, bodySchema: json(body), bodyRequired: body?.required === true, responses };
}
