import { test } from "node:test";
import assert from "node:assert/strict";
import { ConsoleRing } from "./console-ring.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

test("keeps only the newest bytes and reports offsets and truncation", () => {
  const ring = new ConsoleRing(8);
  ring.append(enc("abcde"));
  assert.deepEqual({ ...ring.read(100), data: dec(ring.read(100).data) }, { data: "abcde", offset: 0, truncated: false });
  ring.append(enc("fghij"));
  const r = ring.read(100);
  assert.equal(dec(r.data), "cdefghij");
  assert.equal(r.offset, 2);
  assert.equal(r.truncated, true);
  assert.equal(dec(ring.tail(3)), "hij");
  ring.append(enc("0123456789ABC"));
  assert.equal(dec(ring.tail(100)), "56789ABC");
  assert.deepEqual(ring.position(), { start: 15, end: 23 });
  assert.equal(dec(ring.readFrom(0).data), "56789ABC");
});

test("followers see new output, skip ahead when behind, and end on close", async () => {
  const ring = new ConsoleRing(4);
  ring.append(enc("old"));
  const ac = new AbortController();
  const it = ring.follow(ac.signal)[Symbol.asyncIterator]();
  const first = it.next();
  ring.append(enc("xy"));
  const chunk = (await first).value;
  assert.equal(dec(chunk.data), "xy");
  assert.equal(chunk.offset, 3);
  ring.append(enc("123456"));
  const jumped = (await it.next()).value;
  assert.equal(dec(jumped.data), "3456");
  assert.equal(jumped.offset, 7);
  const end = it.next();
  ring.close();
  assert.equal((await end).done, true);
});

test("abort ends a waiting follower", async () => {
  const ring = new ConsoleRing(16);
  const ac = new AbortController();
  const it = ring.follow(ac.signal)[Symbol.asyncIterator]();
  const pending = it.next();
  ac.abort();
  assert.equal((await pending).done, true);
});

test("a follower from an old offset starts at the oldest buffered byte, and the offset says so", async () => {
  const ring = new ConsoleRing(4);
  ring.append(enc("abcdef"));
  const ac = new AbortController();
  const it = ring.follow(ac.signal, 1)[Symbol.asyncIterator]();
  const chunk = (await it.next()).value;
  assert.deepEqual({ data: dec(chunk.data), offset: chunk.offset }, { data: "cdef", offset: 2 });
  ac.abort();
});
