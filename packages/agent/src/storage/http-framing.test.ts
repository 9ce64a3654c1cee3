import assert from "node:assert/strict";
import { test } from "node:test";
import { QuantixError } from "@quantix/core";
import { ChunkedDecoder, framingOf, parseHead } from "./http-framing.js";

test("a head's status and headers: names lowercased, repeated fields joined, values trimmed", () => {
  const head = parseHead("HTTP/1.1 200 OK\r\nContent-Length:  12 \r\nX-A: 1\r\nx-a: 2\r\nEmpty:");
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), "12");
  assert.equal(head.headers.get("x-a"), "1, 2");
  assert.equal(head.headers.get("empty"), "");
  assert.equal(parseHead("HTTP/1.0 302").status, 302);
});

test("what is not an HTTP/1.x head is UNAVAILABLE", () => {
  for (const bad of ["HTTP/2 200", "SSH-2.0-OpenSSH", "HTTP/1.1 20 OK", "HTTP/1.1 200 OK\r\n folded: x", "HTTP/1.1 200 OK\r\nno colon", "HTTP/1.1 200 OK\r\nbad name: x"]) {
    assert.throws(() => parseHead(bad), (e: unknown) => e instanceof QuantixError && e.code === "unavailable" && /not valid HTTP/.test(e.message), bad);
  }
});

test("a body's framing: chunked first, then Content-Length (repeats agreeing), else until the server closes", () => {
  const h = (headers: Record<string, string>) => ({ status: 200, headers: new Map(Object.entries(headers)) });
  assert.deepEqual(framingOf(h({ "transfer-encoding": "Chunked", "content-length": "5" })), { kind: "chunked" });
  assert.deepEqual(framingOf(h({ "content-length": "5, 5" })), { kind: "length", length: 5n });
  assert.deepEqual(framingOf(h({ "content-length": "1099511627776" })), { kind: "length", length: 1n << 40n });
  assert.deepEqual(framingOf(h({})), { kind: "close" });
  for (const bad of [{ "content-length": "5, 6" }, { "content-length": "-1" }, { "content-length": "0x10" }, { "content-length": "" }, { "transfer-encoding": "gzip, chunked" }]) {
    assert.throws(() => framingOf(h(bad)), (e: unknown) => e instanceof QuantixError && e.code === "unavailable", JSON.stringify(bad));
  }
});

/** Decodes `wire` fed in pieces of `step` bytes, as reads would bring it; returns the payload and whether the decoder saw the end. */
function decode(wire: Buffer, step: number): { payload: Buffer; done: boolean } {
  const d = new ChunkedDecoder();
  const buf = Buffer.alloc(wire.length);
  let fill = 0;
  for (let i = 0; i < wire.length && !d.done; i += step) {
    const piece = wire.subarray(i, i + step);
    piece.copy(buf, fill);
    fill = d.take(buf, fill, fill + piece.length);
  }
  return { payload: buf.subarray(0, fill), done: d.done };
}

test("chunked coding is decoded in place whatever the read boundaries: extensions and trailers skipped, bytes after the end ignored", () => {
  const payload = Buffer.from("hello, chunked world: ".repeat(50));
  const wire = Buffer.concat([
    Buffer.from(`${(5).toString(16)};name=value\r\n`),
    payload.subarray(0, 5),
    Buffer.from(`\r\n${(payload.length - 5).toString(16).toUpperCase()}\r\n`),
    payload.subarray(5),
    Buffer.from("\r\n0\r\nX-Trailer: yes\r\n\r\nnext response"),
  ]);
  for (const step of [1, 2, 3, 7, 64, wire.length]) {
    const got = decode(wire, step);
    assert.ok(got.done, `step ${step}: the end seen`);
    assert.deepEqual(got.payload, payload, `step ${step}`);
  }
  assert.equal(decode(Buffer.from("0\r\n\r\n"), 1).payload.length, 0);
  const cut = decode(wire.subarray(0, 40), 8);
  assert.equal(cut.done, false, "a body cut short is not done");
});

test("malformed chunked coding is UNAVAILABLE", () => {
  for (const bad of ["zz\r\n", "\r\n", "5\r\nhelloX\r\n", "5\n", "fffffffffffffff\r\n", "3\r\nabc\r\n0\r\n\rX"]) {
    assert.throws(() => decode(Buffer.from(bad), 1), (e: unknown) => e instanceof QuantixError && e.code === "unavailable", JSON.stringify(bad));
  }
});
