import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import type { FuzzTarget } from "./fuzz-targets.js";

/**
 * One way of spoiling a request, as data (fast-check generates it from the run's seed).
 * Message mutations change the request before it is encoded; body and header mutations
 * change the bytes and headers on the wire.
 */
export type Mutation =
  | { readonly kind: "huge-id"; readonly size: number }
  | { readonly kind: "nul-id"; readonly prefix: string }
  | { readonly kind: "unicode-id"; readonly id: string }
  | { readonly kind: "control-id"; readonly code: number }
  | { readonly kind: "bad-field-mask"; readonly paths: readonly string[] }
  | { readonly kind: "bad-page-token"; readonly token: string }
  | { readonly kind: "bad-page-size"; readonly size: number }
  | { readonly kind: "bad-order-by"; readonly orderBy: string }
  | { readonly kind: "bad-enum"; readonly value: number }
  | { readonly kind: "bad-labels"; readonly key: string; readonly value: string }
  | { readonly kind: "wrong-type"; readonly value: unknown; readonly wireType: number }
  | { readonly kind: "unknown-field"; readonly name: string; readonly value: unknown }
  | { readonly kind: "bad-json"; readonly text: string }
  | { readonly kind: "deep-json"; readonly depth: number }
  | { readonly kind: "truncated"; readonly fraction: number }
  | { readonly kind: "wrong-length"; readonly delta: number }
  | { readonly kind: "random-bytes"; readonly bytes: Uint8Array; readonly enveloped: boolean }
  | { readonly kind: "extra-messages"; readonly count: number }
  | { readonly kind: "compressed-flag"; readonly declareGzip: boolean }
  | { readonly kind: "wrong-content-type"; readonly contentType: string }
  | { readonly kind: "missing-headers"; readonly drop: readonly string[] }
  | { readonly kind: "bad-timeout"; readonly value: string }
  | { readonly kind: "unknown-method"; readonly path: string }
  | { readonly kind: "empty-body" }
  | { readonly kind: "get-method"; readonly query: string };

const text = (max: number) => fc.string({ unit: "binary", maxLength: max });
const ascii = (max: number) => fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: max });

/** Field mask paths that no UpdateVM accepts (status, ids, read-only, unknown, malformed). */
const BAD_PATHS = ["status", "status.state", "id", "resource_version", "spec.desired_power_state", "spec..cpu", "", ".", "spec.cpu.cores.x", "labels.a.b", "name", "created_at", "project_id"];

/** Every mutation, generated from the run's seed. */
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("huge-id" as const), size: fc.integer({ min: 8 * 1024, max: 200 * 1024 }) }),
  fc.record({ kind: fc.constant("nul-id" as const), prefix: fc.constantFrom("", "vm", "11111111-1111-1111-1111-111111111111") }),
  fc.record({ kind: fc.constant("unicode-id" as const), id: fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }) }),
  fc.record({ kind: fc.constant("control-id" as const), code: fc.integer({ min: 0, max: 31 }) }),
  fc.record({ kind: fc.constant("bad-field-mask" as const), paths: fc.array(fc.oneof(fc.constantFrom(...BAD_PATHS), ascii(20).map((s) => `${s}!`), text(300)), { minLength: 1, maxLength: 5 }) }),
  fc.record({ kind: fc.constant("bad-page-token" as const), token: fc.oneof(text(100), fc.base64String({ maxLength: 200 }), ascii(3000), fc.json().map((j) => Buffer.from(j).toString("base64url"))) }),
  fc.record({ kind: fc.constant("bad-page-size" as const), size: fc.oneof(fc.integer({ min: -(2 ** 31), max: -1 }), fc.integer({ min: 1001, max: 2 ** 31 - 1 })) }),
  fc.record({ kind: fc.constant("bad-order-by" as const), orderBy: fc.oneof(text(50), fc.constantFrom("name sideways", "id", "status.state", "name desc desc", "created_at\u0000")) }),
  fc.record({ kind: fc.constant("bad-enum" as const), value: fc.oneof(fc.integer({ min: 100, max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: -1 })) }),
  fc.record({ kind: fc.constant("bad-labels" as const), key: fc.oneof(text(80), fc.constant("")), value: fc.oneof(text(300), fc.constant("a\u0000b")) }),
  fc.record({ kind: fc.constant("wrong-type" as const), value: fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 })), wireType: fc.constantFrom(0, 1, 5, 3, 4, 6, 7) }),
  fc.record({ kind: fc.constant("unknown-field" as const), name: fc.oneof(text(30), fc.constant("x".repeat(50_000))), value: fc.jsonValue() }),
  fc.record({ kind: fc.constant("bad-json" as const), text: fc.oneof(text(200), fc.constantFrom("{", '{"id":', "[]", "null", "1", '"x"', "{}}", '{"id": "a" "b"}', "\u0000", "{\"id\": NaN}"), fc.json().map((j) => j.slice(0, Math.max(0, j.length - 1)))) }),
  fc.record({ kind: fc.constant("deep-json" as const), depth: fc.integer({ min: 100, max: 200_000 }) }),
  fc.record({ kind: fc.constant("truncated" as const), fraction: fc.double({ min: 0, max: 0.999, noNaN: true }) }),
  fc.record({ kind: fc.constant("wrong-length" as const), delta: fc.oneof(fc.integer({ min: -64, max: 64 }), fc.integer({ min: 65, max: 2 ** 31 })) }),
  fc.record({ kind: fc.constant("random-bytes" as const), bytes: fc.uint8Array({ maxLength: 2048 }), enveloped: fc.boolean() }),
  fc.record({ kind: fc.constant("extra-messages" as const), count: fc.integer({ min: 2, max: 5 }) }),
  fc.record({ kind: fc.constant("compressed-flag" as const), declareGzip: fc.boolean() }),
  fc.record({ kind: fc.constant("wrong-content-type" as const), contentType: fc.constantFrom("text/plain", "application/xml", "application/grpc+json", "application/json; charset=utf-16", "application/connect+json", "application/grpc-web-text", "application/proto", "application/grpc", "multipart/form-data; boundary=x", "*/*") }),
  fc.record({ kind: fc.constant("missing-headers" as const), drop: fc.subarray(["content-type", "te", "connect-protocol-version", "x-grpc-web", "grpc-timeout", "connect-timeout-ms"], { minLength: 1 }) }),
  fc.record({ kind: fc.constant("bad-timeout" as const), value: fc.constantFrom("abc", "-1S", "99999999999H", "1", "1n", "0m", "1.5S", "18446744073709551616m", "-5") }),
  fc.record({ kind: fc.constant("unknown-method" as const), path: fc.oneof(fc.constantFrom("/Quantixkvm.compute.v1.VMService/NoSuchMethod", "/no.such.Service/Get", "/", "/Quantixkvm.compute.v1.VMService/", "//GetVM", "/Quantixkvm.compute.v1.VMService/GetVM/extra"), ascii(60).map((s) => `/${s}`)) }),
  fc.record({ kind: fc.constant("empty-body" as const) }),
  fc.record({ kind: fc.constant("get-method" as const), query: fc.oneof(fc.constant(""), fc.constant("?encoding=json&message=%7B"), ascii(100).map((s) => `?message=${encodeURIComponent(s)}&encoding=proto`)) }),
);

/** Whether a message mutation applies to a target (it needs a field of a certain kind). */
export function accepts(mu: Mutation, t: FuzzTarget): boolean {
  const has = (f: string) => t.method.input.fields.some((x) => x.jsonName === f);
  switch (mu.kind) {
    case "huge-id":
    case "nul-id":
    case "unicode-id":
    case "control-id":
      return t.idField !== undefined;
    case "bad-field-mask":
      return t.method.name === "UpdateVM";
    case "bad-page-token":
    case "bad-page-size":
    case "bad-order-by":
      return has("pageToken");
    case "bad-enum":
      return has("states") || has("phases");
    case "bad-labels":
      return has("labels") && t.method.name !== "RegisterNode";
    default:
      return true;
  }
}

/** A change of one request field: its JSON name, its value in proto JSON, and as the message holds it. */
export interface FieldEdit {
  readonly field: string;
  readonly json: unknown;
  readonly proto: unknown;
}

/** The field a message mutation changes, or undefined for the mutations of bytes and headers. */
export function messageEdit(mu: Mutation, t: FuzzTarget): FieldEdit | undefined {
  const id = t.idField ?? "id";
  const same = (field: string, v: unknown): FieldEdit => ({ field, json: v, proto: v });
  switch (mu.kind) {
    case "huge-id":
      return same(id, "x".repeat(mu.size));
    case "nul-id":
      return same(id, `${mu.prefix}\u0000`);
    case "unicode-id":
      return same(id, mu.id);
    case "control-id":
      return same(id, `vm${String.fromCharCode(mu.code)}1`);
    case "bad-field-mask":
      return { field: "updateMask", json: mu.paths.join(","), proto: create(FieldMaskSchema, { paths: [...mu.paths] }) };
    case "bad-page-token":
      return same("pageToken", mu.token);
    case "bad-page-size":
      return same("pageSize", mu.size);
    case "bad-order-by":
      return same("orderBy", mu.orderBy);
    case "bad-enum":
      return same(t.method.input.fields.some((x) => x.jsonName === "states") ? "states" : "phases", [mu.value]);
    case "bad-labels":
      return same("labels", { [mu.key]: mu.value });
    default:
      return undefined;
  }
}
