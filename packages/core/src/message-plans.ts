import { ScalarType, type DescMessage } from "@bufbuild/protobuf";
import { isWrapperDesc } from "@bufbuild/protobuf/wkt";

// What the plan-based encoder (message-encoder.ts) and decoder (message-decoder.ts) share.

/**
 * Plans by message type, each made once: `begin` starts a type's plan (undefined: the type
 * is not supported), `fill` completes it, planning the types it holds through `sub`
 * (false: a field is not supported). A type is cached before its fields, for recursive
 * types; when a type it holds (or it) is not supported, nothing planned on the way is
 * trusted, and the whole call answers undefined.
 */
export function planner<P extends object>(
  begin: (desc: DescMessage) => P | undefined,
  fill: (desc: DescMessage, plan: P, sub: (held: DescMessage) => P | undefined) => boolean,
): (desc: DescMessage) => P | undefined {
  const plans = new WeakMap<DescMessage, P | null>();
  return (desc) => {
    const known = plans.get(desc);
    if (known !== undefined) return known ?? undefined;
    const made: DescMessage[] = [];
    const build = (d: DescMessage): P | undefined => {
      const cached = plans.get(d);
      if (cached !== undefined) return cached ?? undefined;
      const plan = begin(d);
      if (plan === undefined) return undefined;
      plans.set(d, plan);
      made.push(d);
      return fill(d, plan, build) ? plan : undefined;
    };
    if (build(desc) !== undefined) return plans.get(desc)!;
    for (const d of made) plans.set(d, null);
    plans.set(desc, null);
    return undefined;
  };
}

/** Types protobuf-es represents as something else than their message in a field: the wrappers (unboxed) and Struct (a JsonObject). */
export const unboxed = (m: DescMessage): boolean => isWrapperDesc(m) || m.typeName === "google.protobuf.Struct";

/** The wire type a scalar is written with (unpacked). */
export function wireType(t: ScalarType): number {
  switch (t) {
    case ScalarType.BYTES:
    case ScalarType.STRING:
      return 2;
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 1;
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      return 5;
    default:
      return 0;
  }
}
