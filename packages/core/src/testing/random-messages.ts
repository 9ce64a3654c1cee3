import { readdirSync } from "node:fs";
import { join } from "node:path";
import { create, ScalarType, type DescField, type DescFile, type DescMessage } from "@bufbuild/protobuf";

// Random messages of every type of our API, for the differential tests of the message encoder and decoder.

/** Every message type of our API (packages/api's generated files), nested ones included. */
export async function apiMessages(): Promise<DescMessage[]> {
  const root = new URL("../../../api/src/gen/", import.meta.url).pathname;
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.endsWith("_pb.ts")) files.push(join(dir, e.name));
    }
  };
  walk(root);
  const out = new Map<string, DescMessage>();
  const add = (m: DescMessage) => {
    if (out.has(m.typeName)) return;
    out.set(m.typeName, m);
    for (const n of m.nestedMessages) add(n);
  };
  for (const f of files.sort()) {
    const mod = (await import(f)) as Record<string, unknown>;
    for (const v of Object.values(mod)) if (v && typeof v === "object" && (v as DescFile).kind === "file") for (const m of (v as DescFile).messages) add(m);
  }
  return [...out.values()];
}

/** A small deterministic random source (the cases repeat run after run). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRINGS = ["", "a", "vm-000001", "ünïcödé", "日本語", "emoji 😀 pair", "\u0000nul", "x".repeat(200), "é".repeat(70)];

/** A random valid value for a scalar type. */
export function scalar(r: () => number, t: ScalarType): unknown {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  switch (t) {
    case ScalarType.STRING:
      return pick(STRINGS);
    case ScalarType.BYTES:
      return pick([new Uint8Array(), new Uint8Array([1, 2, 3]), new Uint8Array(300).fill(7)]);
    case ScalarType.BOOL:
      return r() < 0.5;
    case ScalarType.DOUBLE:
      return pick([0, -0, 1.5, -2.25e300, Number.NaN, Number.POSITIVE_INFINITY, 1e-300]);
    case ScalarType.FLOAT:
      return pick([0, -0, 1.5, -3.25, Number.NaN, 3.4e38]);
    case ScalarType.INT32:
    case ScalarType.SFIXED32:
    case ScalarType.SINT32:
      return pick([0, 1, -1, 127, 128, 300, -2147483648, 2147483647, 16384]);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return pick([0, 1, 127, 128, 4294967295, 2147483648, 268435456]);
    case ScalarType.INT64:
    case ScalarType.SFIXED64:
    case ScalarType.SINT64:
      return pick([0n, 1n, -1n, 127n, 128n, 4294967296n, -(1n << 63n), (1n << 63n) - 1n, 1_700_000_000n]);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return pick([0n, 1n, 128n, 4294967295n, 4294967296n, (1n << 64n) - 1n, 1n << 53n]);
  }
}

function singular(r: () => number, f: DescField, depth: number): unknown {
  if (f.scalar !== undefined) return scalar(r, f.scalar);
  if (f.enum !== undefined) return r() < 0.1 ? 99 : f.enum.values[Math.floor(r() * f.enum.values.length)]!.number;
  return randomMessage(r, f.message!, depth + 1);
}

/** A random message: each field set or not, lists and maps of 0-3 entries, oneofs on one of their members. */
export function randomMessage(r: () => number, desc: DescMessage, depth = 0): Record<string, unknown> {
  const m = create(desc) as unknown as Record<string, unknown>;
  if (depth > 4) return m;
  for (const f of desc.fields) {
    if (r() < 0.35) continue;
    if (f.oneof) {
      if ((m[f.oneof.localName] as { case?: string }).case === undefined) m[f.oneof.localName] = { case: f.localName, value: singular(r, f, depth) };
      continue;
    }
    switch (f.fieldKind) {
      case "list":
        m[f.localName] = Array.from({ length: Math.floor(r() * 4) }, () => singular(r, f as DescField, depth));
        break;
      case "map": {
        const map: Record<string, unknown> = {};
        for (let i = Math.floor(r() * 4); i > 0; i--) map[String(scalar(r, ScalarType.STRING)) + i] = singular(r, f as DescField, depth);
        m[f.localName] = map;
        break;
      }
      default:
        m[f.localName] = singular(r, f, depth);
    }
  }
  return m;
}

