import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { QuantixError } from "./errors.js";
import { encodePageToken, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, parsePageRequest } from "./pagination.js";

const FIELDS = ["name", "created_at"] as const;
const parse = (input: { pageSize?: number; pageToken?: string; orderBy?: string }, fingerprint = "project=p1") =>
  parsePageRequest({ pageSize: input.pageSize ?? 0, pageToken: input.pageToken ?? "", orderBy: input.orderBy ?? "" }, FIELDS, fingerprint);

/** Asserts INVALID_ARGUMENT with a violation of `field` (and `reason`, when given). */
function rejects(run: () => unknown, field: string, reason?: string): void {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof QuantixError, `expected a QuantixError, got ${String(e)}`);
    assert.equal(e.code, "invalid_argument");
    const v = e.violations.find((x) => x.field === field);
    assert.ok(v, `no violation of ${field} in ${JSON.stringify(e.violations)}`);
    if (reason) assert.equal(v.reason, reason);
    return true;
  });
}

describe("parsePageRequest: page_size", () => {
  it("0 means the default", () => assert.equal(parse({ pageSize: 0 }).size, PAGE_SIZE_DEFAULT));
  it("1 and the maximum are accepted as given", () => {
    assert.equal(parse({ pageSize: 1 }).size, 1);
    assert.equal(parse({ pageSize: PAGE_SIZE_MAX }).size, 1000);
  });
  it("above the maximum or negative is rejected on page_size", () => {
    rejects(() => parse({ pageSize: 1001 }), "page_size", "OUT_OF_RANGE");
    rejects(() => parse({ pageSize: -1 }), "page_size", "OUT_OF_RANGE");
  });
});

describe("parsePageRequest: order_by", () => {
  it("empty means the first field, ascending", () => assert.deepEqual(parse({}).order, { field: "name", desc: false }));
  it("parses a field and an optional direction", () => {
    assert.deepEqual(parse({ orderBy: "name" }).order, { field: "name", desc: false });
    assert.deepEqual(parse({ orderBy: "created_at desc" }).order, { field: "created_at", desc: true });
    assert.deepEqual(parse({ orderBy: "  created_at   asc " }).order, { field: "created_at", desc: false });
  });
  it("rejects unknown fields, directions and extra words on order_by", () => {
    for (const orderBy of ["bogus", "name sideways", "name desc extra", "updated_at"]) {
      rejects(() => parse({ orderBy }), "order_by", "INVALID_FORMAT");
    }
  });
  it("reports every bad parameter at once", () => {
    assert.throws(
      () => parse({ pageSize: -1, orderBy: "bogus" }),
      (e: unknown) => e instanceof QuantixError && e.violations.map((v) => v.field).sort().join() === "order_by,page_size",
    );
  });
});

describe("parsePageRequest: page_token", () => {
  const order = { field: "created_at", desc: true } as const;
  const cursor = { key: 1_700_000_000_000, id: "vm-42" };

  it("round-trips the cursor of a token issued for the same filter and order", () => {
    const pageToken = encodePageToken(order, "project=p1", cursor);
    const req = parse({ pageToken, orderBy: "created_at desc", pageSize: 10 });
    assert.deepEqual(req.after, cursor);
    assert.equal(req.size, 10);
    const byName = encodePageToken({ field: "name", desc: false }, "project=p1", { key: "web-1", id: "vm-1" });
    assert.deepEqual(parse({ pageToken: byName, orderBy: "name" }).after, { key: "web-1", id: "vm-1" });
  });

  it("no token means the first page", () => assert.equal(parse({ orderBy: "name" }).after, undefined));

  it("rejects a token issued for another filter or another order as MISMATCH", () => {
    const pageToken = encodePageToken(order, "project=p1", cursor);
    rejects(() => parse({ pageToken, orderBy: "created_at desc" }, "project=p2"), "page_token", "MISMATCH");
    rejects(() => parse({ pageToken, orderBy: "created_at" }), "page_token", "MISMATCH");
    rejects(() => parse({ pageToken, orderBy: "name desc" }), "page_token", "MISMATCH");
  });

  it("rejects garbage as INVALID_FORMAT", () => {
    const garbage = [
      "not a token!",
      "%%%",
      Buffer.from("{not json").toString("base64url"),
      Buffer.from("hello world").toString("base64url"),
      Buffer.from("null").toString("base64url"),
      Buffer.from("42").toString("base64url"),
      Buffer.from("[]").toString("base64url"),
      Buffer.from(JSON.stringify({ v: 2, o: "created_at:desc", f: "project=p1", k: 1, i: "x" })).toString("base64url"),
      Buffer.from(JSON.stringify({ v: 1, o: "created_at:desc", f: "project=p1", k: {}, i: "x" })).toString("base64url"),
      Buffer.from(JSON.stringify({ v: 1, o: "created_at:desc", f: "project=p1", k: 1 })).toString("base64url"),
      // A key of the wrong type for the order, or not a safe integer: never reaches the store.
      Buffer.from(JSON.stringify({ v: 1, o: "created_at:desc", f: "project=p1", k: "not-a-number", i: "x" })).toString("base64url"),
      Buffer.from(JSON.stringify({ v: 1, o: "created_at:desc", f: "project=p1", k: 1e300, i: "x" })).toString("base64url"),
      Buffer.from(JSON.stringify({ v: 1, o: "created_at:desc", f: "project=p1", k: 1.5, i: "x" })).toString("base64url"),
      // A well-formed token grown past the size limit.
      encodePageToken(order, "project=p1", { key: 1, id: "x".repeat(3000) }),
    ];
    for (const pageToken of garbage) {
      rejects(() => parse({ pageToken, orderBy: "created_at desc" }), "page_token", "INVALID_FORMAT");
    }
    const numberForName = Buffer.from(JSON.stringify({ v: 1, o: "name:asc", f: "project=p1", k: 7, i: "x" })).toString("base64url");
    rejects(() => parse({ pageToken: numberForName, orderBy: "name" }), "page_token", "INVALID_FORMAT");
  });
});
