import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { notFound, QuantixError } from "@quantix/core";
import { boundText, MESSAGE_MAX_BYTES, toConnectError } from "./errors.js";

// Defence in depth behind the id formats: whatever an error echoes, a client is sent a
// bounded message without raw control characters (a 100 KiB grpc-message header used to
// reset the stream with FRAME_SIZE_ERROR).

const bytes = (s: string) => Buffer.byteLength(s);

test("a message echoing 100 KiB is cut to MESSAGE_MAX_BYTES with an ellipsis", () => {
  const err = toConnectError(notFound("VM", "x".repeat(100 * 1024)));
  assert.equal(err.code, Code.NotFound);
  assert.ok(bytes(err.rawMessage) <= MESSAGE_MAX_BYTES, `${bytes(err.rawMessage)} bytes`);
  assert.ok(err.rawMessage.startsWith("VM 'xxx"));
  assert.ok(err.rawMessage.endsWith("…"));
});

test("control characters are escaped, never sent raw", () => {
  const err = toConnectError(notFound("VM", "a\u0000b\r\nc\u007f\u2028"));
  assert.equal(err.rawMessage, "VM 'a\\u0000b\\u000d\\u000ac\\u007f\\u2028' not found");
});

test("a cut never splits a character", () => {
  for (const ch of ["é", "€", "😀"]) {
    const out = boundText(ch.repeat(1000), 100);
    assert.ok(bytes(out) <= 100);
    assert.equal([...out.slice(0, -1)].every((c) => c === ch), true, ch);
  }
});

test("short, clean messages and other codes pass unchanged", () => {
  const e = new ConnectError("bad", Code.InvalidArgument);
  assert.equal(toConnectError(e), e);
  assert.equal(toConnectError(notFound("VM", "vm-1")).rawMessage, "VM 'vm-1' not found");
});

test("a ConnectError (a parse error naming a field) is bounded too, keeping its code", () => {
  const err = toConnectError(new ConnectError(`cannot decode: key "${"k".repeat(50_000)}\u0000" is unknown`, Code.InvalidArgument));
  assert.equal(err.code, Code.InvalidArgument);
  assert.ok(bytes(err.rawMessage) <= MESSAGE_MAX_BYTES);
  assert.ok(!err.rawMessage.includes("\u0000"));
});

test("field violations in the BadRequest detail are bounded in size and count", () => {
  const many = Array.from({ length: 1000 }, (_, i) => ({ field: `labels["${"k".repeat(10_000)}${i}"]`, reason: "INVALID_FORMAT", description: "d\u0000".repeat(1000) }));
  const err = toConnectError(new QuantixError("invalid_argument", "invalid request", many));
  const [detail] = err.findDetails(BadRequestSchema);
  assert.ok(detail);
  assert.ok(detail.fieldViolations.length >= 1 && detail.fieldViolations.length < 20, `${detail.fieldViolations.length} violations`);
  const size = detail.fieldViolations.reduce((n, v) => n + bytes(v.field) + bytes(v.description) + bytes(v.reason), 0);
  assert.ok(size <= 2048 + 512, `${size} bytes`);
  assert.ok(detail.fieldViolations.every((v) => !v.description.includes("\u0000")));
});
