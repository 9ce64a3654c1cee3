import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { QuantixError } from "@quantix/core";
import {
  Binary, BSON, BSONRegExp, Decimal128, Double, Int32, Long, MaxKey, MinKey, ObjectId, Timestamp, type Document,
} from "bson";
import { DIFF_LIMITS, EMPTY_DOCUMENT, applyDiff, parseDiff, pathsOverlap } from "./diff.js";

const bson = (o: Document | Map<string, unknown>): Uint8Array => BSON.serialize(o as Document);
const read = (b: Uint8Array): Document => BSON.deserialize(b, { promoteValues: false, bsonRegExp: true });
/** Applies a diff given as an object to a document given as an object; returns the result as read back. */
const apply = (doc: Document, diff: Document): Document => read(applyDiff(bson(doc), parseDiff(bson(diff))));
/** Field names of a BSON document in their byte order. */
const keys = (b: Uint8Array): string[] => [...BSON.onDemand.parseToElements(b, 0)].map(([, off, len]) => Buffer.from(b.subarray(off, off + len)).toString());

/** Asserts that `fn` throws a QuantixError with `code` and a violation on `field` whose description matches. */
function throwsOn(fn: () => unknown, code: string, field: string, description: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof QuantixError, `a QuantixError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    const v = e.violations.find((x) => x.field === field);
    assert.ok(v, `a violation on ${field}; got ${JSON.stringify(e.violations)}`);
    assert.match(v.description, description);
    return true;
  });
}
const rejects = (diff: Uint8Array, field: string, description: RegExp, as?: string) =>
  throwsOn(() => parseDiff(diff, as), "invalid_argument", field, description);
const cannotApply = (doc: Document, diff: Document, field: string, description: RegExp) =>
  throwsOn(() => applyDiff(bson(doc), parseDiff(bson(diff))), "failed_precondition", field, description);

/** BSON built from parts, for documents too large for BSON.serialize's shared 17 MiB buffer. */
const int32 = (n: number) => Buffer.from(Int32Array.of(n).buffer);
function largeDocument(elements: [name: string, type: number, value: Uint8Array[]][]): Uint8Array[] {
  const body = elements.flatMap(([name, type, value]) => [Uint8Array.of(type), Buffer.from(`${name}\0`), ...value]);
  return [int32(4 + body.reduce((n, b) => n + b.length, 0) + 1), ...body, Uint8Array.of(0)];
}
const binary = (payload: Uint8Array) => [int32(payload.length), Uint8Array.of(0), payload];

/** Rewrites the type byte of the first element named `name` (to craft BSON that serializers do not produce). */
function retype(b: Uint8Array, name: string, from: number, to: number): Uint8Array {
  const out = Uint8Array.from(b);
  const i = Buffer.from(out).indexOf(Buffer.from([from, ...Buffer.from(name), 0]));
  assert.ok(i >= 0, `element ${name} of type ${from}`);
  out[i] = to;
  return out;
}

describe("$set", () => {
  test("sets fields, creating intermediate documents; existing fields keep their place, new ones append", () => {
    const out = applyDiff(bson({ a: 1, b: { c: 2 }, z: 3 }), parseDiff(bson({ $set: { a: "x", "b.d.e": true, n: null } })));
    assert.deepEqual(keys(out), ["a", "b", "z", "n"]);
    const doc = read(out);
    assert.equal(doc.a, "x");
    assert.deepEqual(keys(bson(doc.b)), ["c", "d"]);
    assert.equal(doc.b.d.e, true);
    assert.equal(doc.n, null);
  });

  test("a numeric segment indexes an array, padding with nulls past the end; in a document it is a field name", () => {
    const doc = apply({ arr: [1, 2], obj: { x: 0 } }, { $set: { "arr.1": "two", "arr.4": "five", "obj.3": "three", "new.0": "zero" } });
    assert.deepEqual(doc.arr.map(String), ["1", "two", "null", "null", "five"]);
    assert.deepEqual(Object.keys(doc.obj), ["3", "x"].sort()); // JS orders integer keys first; bytes keep order:
    assert.deepEqual(keys(bson(doc.obj)).sort(), ["3", "x"]);
    assert.equal(doc.new["0"], "zero", "a missing intermediate is a document, not an array");
    assert.ok(!Array.isArray(doc.new));
  });

  test("creates documents inside array elements, padding as needed", () => {
    const doc = apply({ arr: [{ a: 1 }] }, { $set: { "arr.0.b": 2, "arr.2.c": 3 } });
    assert.equal(String(doc.arr[0].a), "1");
    assert.equal(String(doc.arr[0].b), "2");
    assert.equal(doc.arr[1], null);
    assert.equal(String(doc.arr[2].c), "3");
  });

  test("cannot go through a scalar, a null, or a non-numeric segment of an array", () => {
    cannotApply({ a: "text" }, { $set: { "a.b": 1 } }, "diff_bson.$set.a.b", /cannot create field 'b' in 'a': it is string/);
    cannotApply({ a: null }, { $set: { "a.b": 1 } }, "diff_bson.$set.a.b", /'a': it is null/);
    cannotApply({ a: [1] }, { $set: { "a.x": 1 } }, "diff_bson.$set.a.x", /'x' in 'a': it is an array/);
    cannotApply({ a: [1] }, { $set: { "a.01": 1 } }, "diff_bson.$set.a.01", /it is an array/);
    cannotApply({ a: { b: 5 } }, { $inc: { "a.b.c": 1 } }, "diff_bson.$inc.a.b.c", /'b' in 'a.b'|'c' in 'a.b': it is int32/);
  });

  test("an array index over maxArrayIndex is refused, the limit itself is allowed", () => {
    cannotApply({ a: [] }, { $set: { [`a.${DIFF_LIMITS.maxArrayIndex + 1}`]: 1 } }, `diff_bson.$set.a.${DIFF_LIMITS.maxArrayIndex + 1}`, /over the limit of 1000000/);
    const doc = apply({ a: [] }, { $set: { [`a.${DIFF_LIMITS.maxArrayIndex}`]: 1 } });
    assert.equal(doc.a.length, DIFF_LIMITS.maxArrayIndex + 1);
  });
});

describe("$unset", () => {
  test("removes fields; an array element becomes null; a missing path is a no-op", () => {
    const before = bson({ a: 1, b: { c: 2, d: 3 }, arr: [1, 2, 3], s: "x" });
    const out = applyDiff(before, parseDiff(bson({ $unset: { a: "", "b.c": 1, "arr.1": true, "missing.x": "", "s.y": "", "arr.x": "", "arr.9": "" } })));
    const doc = read(out);
    assert.deepEqual(keys(out), ["b", "arr", "s"]);
    assert.deepEqual(Object.keys(doc.b), ["d"]);
    assert.deepEqual(doc.arr.map(String), ["1", "null", "3"]);
    const noop = applyDiff(before, parseDiff(bson({ $unset: { nothing: "" } })));
    assert.deepEqual(Buffer.from(noop), Buffer.from(before), "unchanged bytes");
  });
});

describe("$inc", () => {
  const inc = (value: unknown, amount: unknown) => apply({ n: value }, { $inc: { n: amount } }).n;
  test("int32 + int32 stays int32, overflowing to int64 either way", () => {
    assert.deepEqual(inc(new Int32(2), new Int32(3)), new Int32(5));
    assert.deepEqual(inc(new Int32(2 ** 31 - 1), new Int32(1)), Long.fromNumber(2 ** 31));
    assert.deepEqual(inc(new Int32(-(2 ** 31)), new Int32(-1)), Long.fromNumber(-(2 ** 31) - 1));
  });
  test("int64 with int32 or int64 is int64; an int64 overflow fails, as in MongoDB", () => {
    assert.deepEqual(inc(Long.fromNumber(5), new Int32(1)), Long.fromNumber(6));
    assert.deepEqual(inc(new Int32(5), Long.fromNumber(1)), Long.fromNumber(6));
    assert.deepEqual(inc(Long.MAX_VALUE, Long.fromNumber(-1)), Long.MAX_VALUE.subtract(1));
    cannotApply({ n: Long.MAX_VALUE }, { $inc: { n: new Int32(1) } }, "diff_bson.$inc.n", /would overflow int64/);
    cannotApply({ n: Long.MIN_VALUE }, { $inc: { n: Long.fromNumber(-1) } }, "diff_bson.$inc.n", /would overflow int64/);
  });
  test("anything with a double is a double", () => {
    assert.deepEqual(inc(new Int32(1), new Double(1)), new Double(2));
    assert.deepEqual(inc(new Double(1.5), new Int32(1)), new Double(2.5));
    assert.deepEqual(inc(Long.fromNumber(1), new Double(0.5)), new Double(1.5));
  });
  test("a missing field is set to the amount, of the amount's type; a missing parent is created", () => {
    const doc = apply({}, { $inc: { "a.i": new Int32(3), l: Long.fromNumber(4), d: new Double(5) } });
    assert.deepEqual(doc.a.i, new Int32(3));
    assert.deepEqual(doc.l, Long.fromNumber(4));
    assert.deepEqual(doc.d, new Double(5));
  });
  test("a non-number field cannot be incremented; a non-number amount is invalid", () => {
    cannotApply({ n: "1" }, { $inc: { n: 1 } }, "diff_bson.$inc.n", /needs a number there, found string/);
    cannotApply({ n: null }, { $inc: { n: 1 } }, "diff_bson.$inc.n", /found null/);
    cannotApply({ n: Decimal128.fromString("1") }, { $inc: { n: 1 } }, "diff_bson.$inc.n", /found decimal128/);
    rejects(bson({ $inc: { n: "1" } }), "diff_bson.$inc.n", /needs a number .* got string/);
    rejects(bson({ $inc: { n: Decimal128.fromString("1") } }), "diff_bson.$inc.n", /decimal128 is not supported/);
  });
});

describe("$push and $pop", () => {
  test("$push appends one value or $each's values, creating the array when missing", () => {
    const doc = apply({ a: [1] }, { $push: { a: { x: 1 }, b: { $each: [1, "two"] }, "c.d": 5 } });
    assert.equal(doc.a.length, 2);
    assert.equal(String(doc.a[1].x), "1");
    assert.deepEqual(doc.b.map(String), ["1", "two"]);
    assert.deepEqual(doc.c.d.map(String), ["5"]);
  });
  test("$push needs an array there; modifiers other than $each are invalid", () => {
    cannotApply({ a: 1 }, { $push: { a: 2 } }, "diff_bson.$push.a", /needs an array there, found int32/);
    rejects(bson({ $push: { a: { $each: [1], $slice: 2 } } }), "diff_bson.$push.a", /not supported/);
    rejects(bson({ $push: { a: { $each: 1 } } }), "diff_bson.$push.a.$each", /needs an array, got int32/);
  });
  test("$pop removes the last (1) or first (-1) element; missing or empty is a no-op", () => {
    const doc = apply({ a: [1, 2, 3], b: [1, 2, 3], e: [] }, { $pop: { a: 1, b: Long.fromNumber(-1), e: new Double(1), m: 1 } });
    assert.deepEqual(doc.a.map(String), ["1", "2"]);
    assert.deepEqual(doc.b.map(String), ["2", "3"]);
    assert.deepEqual(doc.e, []);
    assert.ok(!("m" in doc));
    cannotApply({ a: "x" }, { $pop: { a: 1 } }, "diff_bson.$pop.a", /needs an array there, found string/);
    rejects(bson({ $pop: { a: 2 } }), "diff_bson.$pop.a", /1 .* or -1/);
    rejects(bson({ $pop: { a: "1" } }), "diff_bson.$pop.a", /1 .* or -1/);
  });
});

describe("parseDiff rejects", () => {
  test("bytes that are not BSON, with the parser's message, and an empty diff", () => {
    rejects(Uint8Array.of(1, 2, 3), "diff_bson", /does not parse as a BSON document: .+/);
    rejects(Uint8Array.of(9, 0, 0, 0, 0, 0, 0, 0, 0), "diff_bson", /does not parse as a BSON document/);
    rejects(new Uint8Array(0), "diff_bson", /is required/);
    rejects(bson({}), "diff_bson", /empty diff/);
    const badName = Buffer.from(bson({ $set: { "aé": 1 } }));
    badName[badName.indexOf(Buffer.from("é"))! + 1] = 0x28; // not a UTF-8 continuation byte
    rejects(badName, "diff_bson", /field name is not valid UTF-8/);
    const badString = Buffer.from(bson({ $set: { a: "é" } }));
    badString[badString.indexOf(Buffer.from("é")) + 1] = 0x28;
    rejects(badString, "diff_bson", /does not parse as a BSON document: .*UTF-8/i);
    rejects(bson({}), "edit.diff_bson", /empty diff/, "edit.diff_bson");
  });
  test("operators: unknown (listing the supported), empty or non-document arguments, given twice, replacement fields", () => {
    rejects(bson({ $rename: { a: "b" } }), "diff_bson.$rename", /unknown operator \$rename; supported: \$set, \$unset, \$inc, \$push, \$pop/);
    rejects(bson({ $set: {} }), "diff_bson.$set", /empty/);
    rejects(bson({ $set: 1 }), "diff_bson.$set", /must be a document/);
    rejects(bson({ $set: [1] }), "diff_bson.$set", /must be a document .* got array/);
    rejects(bson({ a: 1 }), "diff_bson.a", /a replacement document is not a diff; use \$set/);
    // Two $set elements: a JS object cannot hold them, so craft the bytes.
    const twice = Buffer.from(bson({ $set: { a: 1 }, $sex: { b: 1 } }));
    twice.write("$set", twice.indexOf("$sex"));
    rejects(twice, "diff_bson.$set", /given twice/);
  });
  test("bad paths: empty, empty segment, '$' segment, too long, too deep", () => {
    rejects(bson({ $set: { "": 1 } }), "diff_bson.$set.", /empty path/);
    rejects(bson({ $set: { "a..b": 1 } }), "diff_bson.$set.a..b", /empty path segment/);
    rejects(bson({ $unset: { "a.": 1 } }), "diff_bson.$unset.a.", /empty path segment/);
    rejects(bson({ $set: { "a.$.b": 1 } }), "diff_bson.$set.a.$.b", /starts with '\$'/);
    rejects(bson({ $set: { "a.$[]": 1 } }), "diff_bson.$set.a.$[]", /starts with '\$'/);
    const long = "é".repeat(513); // 1026 bytes
    rejects(bson({ $set: { [long]: 1 } }), `diff_bson.$set.${long}`, /at most 1024 bytes, got 1026/);
    parseDiff(bson({ $set: { ["a".repeat(1024)]: 1 } }));
    const deep = Array(101).fill("a").join(".");
    rejects(bson({ $set: { [deep]: 1 } }), `diff_bson.$set.${deep}`, /at most 100 segments/);
  });
  test("more than maxPaths paths", () => {
    const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, i]));
    assert.equal(parseDiff(bson({ $set: many(DIFF_LIMITS.maxPaths) })).paths.length, DIFF_LIMITS.maxPaths);
    rejects(bson({ $set: many(DIFF_LIMITS.maxPaths - 1), $unset: { x: "", y: "" } }), "diff_bson", /at most 10000 paths/);
  });
  test("the same path twice or overlapping paths, across operators", () => {
    rejects(bson({ $set: { a: 1 }, $unset: { a: "" } }), "diff_bson.$unset.a", /path 'a' given twice.*conflict/);
    rejects(bson({ $set: { "a.b": 1 }, $unset: { "a.b.c": "", "a.c": "" } }), "diff_bson.$unset.a.b.c", /'a.b.c' overlaps path 'a.b'/);
    rejects(bson({ $set: { "a.b": 1 }, $inc: { a: 1 } }), "diff_bson.$inc.a", /'a' overlaps path 'a.b'/);
    rejects(bson({ $set: { a: 1, "a.b.c": 1 } }), "diff_bson.$set.a.b.c", /overlaps path 'a'/);
    const ok = parseDiff(bson({ $set: { "a.b": 1, "a.bc": 2 }, $push: { "a.c": 1 } }));
    assert.deepEqual(ok.paths, ["a.b", "a.bc", "a.c"]);
  });
  test("values nested deeper than maxDepth", () => {
    const nest = (levels: number): Document => (levels === 0 ? { leaf: 1 } : { x: nest(levels - 1) });
    // {$set: {a: nest(98)}}: a is level 1, a.x level 2, ..., the leaf level 100. The
    // violation names the document whose fields would be at level 101.
    parseDiff(bson({ $set: { a: nest(98) } }));
    rejects(bson({ $set: { a: nest(99) } }), `diff_bson.$set.a${".x".repeat(99)}`, /nested deeper than 100 levels/);
    rejects(bson({ $set: { "a.b": nest(98) } }), `diff_bson.$set.a.b${".x".repeat(98)}`, /nested deeper than 100 levels/);
    rejects(bson({ $push: { a: nest(98) } }), `diff_bson.$push.a${".x".repeat(98)}`, /nested deeper/);
    parseDiff(bson({ $push: { a: nest(97) } }));
  });
  test("field names inside values that a path could not address, and non-canonical or deprecated values", () => {
    rejects(bson({ $set: { a: { "b.c": 1 } } }), "diff_bson.$set.a.b.c", /without '\.'/);
    rejects(bson({ $set: { a: { b: [{ $x: 1 }] } } }), "diff_bson.$set.a.b.0.$x", /not start with '\$'/);
    rejects(bson({ $push: { a: { $each: [{ "": 1 }] } } }), "diff_bson.$push.a.$each.0.", /non-empty/);
    rejects(retype(bson({ $set: { a: { "5": 1 } } }), "a", 3, 4), "diff_bson.$set.a.5", /array keys must be 0, 1, 2/);
    rejects(retype(bson({ $set: { a: null } }), "a", 10, 6), "diff_bson.$set.a", /undefined .* deprecated/);
  });
  test("a diff over maxDiffBytes, before parsing it", () => {
    rejects(new Uint8Array(DIFF_LIMITS.maxDiffBytes + 1), "diff_bson", /at most 104857600 bytes \(100 MiB\), got 104857601/);
  });
  test("reports several violations at once", () => {
    assert.throws(() => parseDiff(bson({ $set: { "a..b": 1 }, $foo: { x: 1 }, y: 2 })), (e: QuantixError) => e.violations.length === 3);
  });
});

/** MongoDB's semantics on plain values (int32 numbers only), to compare applyDiff with. */
function reference(document: Document, diff: Record<string, Record<string, unknown>>): Document | "cannot" {
  const doc = structuredClone(document);
  const index = /^(0|[1-9][0-9]*)$/;
  for (const [op, args] of Object.entries(diff)) {
    for (const [path, arg] of Object.entries(args)) {
      const segs = path.split(".");
      const creates = op !== "$unset" && op !== "$pop";
      let c: Document | undefined = doc;
      for (const k of segs.slice(0, -1)) {
        const at: Document = c!;
        const fields = at as Record<string, unknown>;
        let next: unknown = Array.isArray(at) && !index.test(k) ? "not an index" : fields[k];
        if (next === undefined && creates) {
          next = {};
          if (Array.isArray(at)) while (at.length < Number(k)) at.push(null);
          fields[k] = next;
        } else if (next === null || typeof next !== "object") {
          if (creates) return "cannot";
          c = undefined;
          break;
        }
        c = next as Document;
      }
      if (c === undefined) continue;
      const k = segs[segs.length - 1]!;
      if (Array.isArray(c) && !index.test(k)) {
        if (creates) return "cannot";
        continue;
      }
      const at: Document = c;
      const set = (v: unknown) => {
        if (Array.isArray(at)) while (at.length < Number(k)) at.push(null);
        at[k] = v;
      };
      const cur = Object.hasOwn(at, k) ? at[k] : undefined;
      if (op === "$set") set(arg);
      else if (op === "$unset" && cur !== undefined) Array.isArray(at) ? (at[Number(k)] = null) : delete at[k];
      else if (op === "$inc") {
        if (cur !== undefined && typeof cur !== "number") return "cannot";
        set((cur ?? 0) + (arg as number));
      } else if (op === "$push") {
        if (cur !== undefined && !Array.isArray(cur)) return "cannot";
        set([...(cur ?? []), arg]);
      } else if (op === "$pop" && cur !== undefined) {
        if (!Array.isArray(cur)) return "cannot";
        if (arg === 1) cur.pop();
        else cur.shift();
      }
    }
  }
  return doc;
}

test("agrees with MongoDB's semantics (a reference on plain values) on random diffs", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)]!;
  const path = () => Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(["a", "b", "0", "1", "3"])).join(".");
  const argument: Record<string, () => unknown> = {
    $set: () => pick([3, "s", null, [1, 2], { a: 1 }]), $unset: () => "", $inc: () => 2, $push: () => pick([1, { b: 2 }]), $pop: () => pick([1, -1]),
  };
  let doc: Document = {};
  let agreed = 0;
  for (let i = 0; i < 3000; i++) {
    const diff: Record<string, Record<string, unknown>> = {};
    for (let j = 0; j < 1 + Math.floor(random() * 3); j++) {
      const op = pick(Object.keys(argument));
      (diff[op] ??= {})[path()] = argument[op]!();
    }
    let parsed;
    try {
      parsed = parseDiff(bson(diff));
    } catch {
      continue; // overlapping paths
    }
    const expected = reference(doc, diff);
    let got: Document | "cannot";
    try {
      got = BSON.deserialize(applyDiff(bson(doc), parsed));
    } catch (e) {
      if (!(e instanceof QuantixError) || e.code !== "failed_precondition") throw e;
      got = "cannot";
    }
    assert.deepEqual(got, expected, `${JSON.stringify(doc)} with ${JSON.stringify(diff)}`);
    agreed++;
    if (got !== "cannot") doc = JSON.stringify(got).length < 400 ? got : {};
  }
  assert.ok(agreed > 2000, `${agreed} diffs compared`);
});

test("pathsOverlap: equal, or a prefix at a segment boundary", () => {
  assert.ok(pathsOverlap("a.b", "a.b"));
  assert.ok(pathsOverlap("a.b", "a.b.c"));
  assert.ok(pathsOverlap("a.b.c", "a.b"));
  assert.ok(pathsOverlap("a", "a.0"));
  assert.ok(!pathsOverlap("a.b", "a.bc"));
  assert.ok(!pathsOverlap("a.bc", "a.b"));
  assert.ok(!pathsOverlap("a.b", "a.c"));
  assert.ok(!pathsOverlap("ab", "a"));
  assert.ok(!pathsOverlap("b.a", "a"));
});

describe("applyDiff", () => {
  test("the example of docs/api/memory-gateway.md", () => {
    const out = applyDiff(
      bson({ title: "Draft", counts: { views: 7 }, tags: ["a", "b"] }),
      parseDiff(bson({
        $set: { title: "Final", "meta.author": "ann", "tags.3": "d" },
        $inc: { "counts.views": 1 },
        $push: { history: { $each: ["v1", "v2"] } },
        $unset: { obsolete: "" },
      })),
    );
    assert.deepEqual(Buffer.from(out), Buffer.from(bson({
      title: "Final", counts: { views: 8 }, tags: ["a", "b", null, "d"], meta: { author: "ann" }, history: ["v1", "v2"],
    })));
  });

  test("unchanged values keep their exact bytes and types, and integer-like keys their order", () => {
    const fields: [string, unknown][] = [
      ["b", new Int32(1)], ["2", Long.fromString("9007199254740993")], ["a", new Double(1)], ["1", new Double(-0)],
      ["dec", Decimal128.fromString("1.10")], ["bin", new Binary(Uint8Array.of(1, 2, 3), 0x80)],
      ["uuid", new Binary(Uint8Array.from({ length: 16 }, (_, i) => i), 4)], ["date", new Date(1_700_000_000_000)],
      ["ts", new Timestamp({ t: 5, i: 6 })], ["oid", new ObjectId("650000000000000000000001")], ["re", new BSONRegExp("a+", "i")],
      ["min", new MinKey()], ["max", new MaxKey()], ["str", "ü€𝄞"], ["arr", [new Int32(1), new Double(2)]],
    ];
    const before = bson(new Map(fields));
    const changed = applyDiff(before, parseDiff(bson({ $set: { added: new Int32(9) } })));
    assert.deepEqual(Buffer.from(changed), Buffer.from(bson(new Map([...fields, ["added", new Int32(9)]]))));
    assert.deepEqual(keys(changed).slice(0, 4), ["b", "2", "a", "1"]);
    const round = read(changed);
    assert.ok(round.b instanceof Int32 && round["2"] instanceof Long && round.a instanceof Double && round.dec instanceof Decimal128);
    assert.equal(round["2"].toString(), "9007199254740993");
    assert.equal((round.bin as Binary).sub_type, 0x80);
    // Values written by a diff keep their types too.
    const set = read(applyDiff(EMPTY_DOCUMENT, parseDiff(bson(new Map([["$set", new Map(fields)]])))));
    assert.deepEqual(set, read(before));
    assert.deepEqual(Buffer.from(applyDiff(new Uint8Array(0), parseDiff(bson(new Map([["$set", new Map(fields)]]))))), Buffer.from(before));
  });

  test("never mutates its inputs, and a parsed diff applies the same way twice", () => {
    const doc = bson({ a: [1, 2], b: { c: 1 } });
    const diffBytes = bson({ $push: { a: 3 }, $set: { "b.d": 2 }, $pop: { x: 1 }, $inc: { "b.c": 1 } });
    const docCopy = Buffer.from(doc);
    const diffCopy = Buffer.from(diffBytes);
    const diff = parseDiff(diffBytes);
    const first = applyDiff(doc, diff);
    const second = applyDiff(doc, diff);
    assert.deepEqual(Buffer.from(first), Buffer.from(second));
    assert.deepEqual(Buffer.from(doc), docCopy);
    assert.deepEqual(Buffer.from(diffBytes), diffCopy);
    assert.deepEqual(read(first).a.map(String), ["1", "2", "3"]);
    assert.equal(first.buffer.byteLength, first.length, "its own memory, not a slice of a shared pool");
  });

  test("a stored document that is not BSON is DATA_LOSS", () => {
    assert.throws(() => applyDiff(Uint8Array.of(9, 0, 0, 0, 0), parseDiff(bson({ $set: { a: 1 } }))), (e: QuantixError) => e.code === "data_loss");
  });

  test("a 100 MB binary $set on a 100 MB document: one copy of the payload, exact bytes, and the size limit", (t) => {
    const size = 100_000_000;
    const withBlob = (payload: Uint8Array) =>
      largeDocument([["before", 16, [int32(7)]], ["blob", 5, binary(payload)], ["after", 2, [int32(2), Buffer.from("z\0")]]]);
    const document = Buffer.concat(withBlob(new Uint8Array(size)));
    const diffBytes = Buffer.concat(largeDocument([["$set", 3, largeDocument([["blob", 5, binary(Buffer.alloc(size, 2))]])]]));
    diffBytes.writeUInt32LE(0xdeadbeef, diffBytes.length - 6); // the payload's last bytes
    // The floor: copying 100 MB into fresh memory, measured on this machine in this run.
    let started = performance.now();
    Buffer.allocUnsafe(size).set(diffBytes.subarray(0, size));
    const copyMs = performance.now() - started;
    started = performance.now();
    const out = applyDiff(document, parseDiff(diffBytes));
    const ms = performance.now() - started;
    t.diagnostic(`parse + apply: ${ms.toFixed(0)} ms; one 100 MB copy: ${copyMs.toFixed(0)} ms`);
    assert.ok(ms < 2 * copyMs + 150, `parse + apply took ${ms} ms, one copy ${copyMs} ms`);
    // The result is the document with the diff's payload in place of the old one.
    assert.equal(out.length, document.length);
    const at = document.indexOf(Buffer.from("blob\0")) + 5 + 5; // name, then int32 length and subtype
    const payloadAt = diffBytes.length - 2 - size; // the payload ends before the two terminators
    assert.ok(Buffer.from(out.buffer, out.byteOffset, at).equals(document.subarray(0, at)), "bytes before the payload");
    assert.ok(Buffer.from(out.buffer, out.byteOffset + at, size).equals(diffBytes.subarray(payloadAt, payloadAt + size)), "the payload");
    assert.ok(Buffer.from(out.buffer, out.byteOffset + at + size).equals(document.subarray(at + size)), "bytes after it");
    // 100 MB + 40 MB is over the 128 MiB document limit; nothing is written.
    const more = parseDiff(Buffer.concat(largeDocument([["$set", 3, largeDocument([["more", 5, binary(new Uint8Array(40_000_000))]])]])));
    assert.throws(() => applyDiff(document, more), (e: QuantixError) =>
      e.code === "resource_exhausted" && /would be 140000\d+ bytes .* limit of 134217728 bytes/.test(e.message));
  });
});
