import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clone, create } from "@bufbuild/protobuf";
import { getTextEncoding } from "@bufbuild/protobuf/wire";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { installFastUtf8Check } from "./utf8-check.js";

describe("the UTF-8 check protobuf-es uses (isWellFormed)", () => {
  it("is installed, and answers as encodeURIComponent did: false for a lone surrogate only", () => {
    assert.equal(installFastUtf8Check(), true);
    const { checkUtf8 } = getTextEncoding();
    const byUri = (s: string) => {
      try {
        encodeURIComponent(s);
        return true;
      } catch {
        return false;
      }
    };
    for (const s of ["", "node-1", "é ü ß", "日本語", "😀 emoji", "\u{10FFFF}", "\ud800", "a\udc00b", "\ud83d", "x\ud83d\ude00\ud800"]) {
      assert.equal(checkUtf8(s), byUri(s), JSON.stringify(s));
    }
  });

  it("a clone still refuses a string with a lone surrogate, anywhere in a node (a store's checked copy)", () => {
    const ok = create(NodeSchema, { id: "n", hostname: "h", status: { vmIds: ["a", "b"] } });
    assert.deepEqual(clone(NodeSchema, ok).status?.vmIds, ["a", "b"]);
    assert.throws(() => clone(NodeSchema, create(NodeSchema, { id: "n", hostname: "bad\ud800" })), /UTF8|UTF-8/i);
    const deep = create(NodeSchema, { id: "n", hostname: "h", status: { vmIds: ["a", "b\udfff"] } });
    assert.throws(() => clone(NodeSchema, deep), /UTF8|UTF-8/i);
  });

  it("encodes and decodes as before, strict decoding refusing bad bytes", () => {
    const te = getTextEncoding();
    assert.deepEqual([...te.encodeUtf8("é")], [0xc3, 0xa9]);
    assert.equal(te.decodeUtf8(new Uint8Array([0xc3, 0xa9])), "é");
    assert.equal(te.decodeUtf8(new Uint8Array([0xff])), "\ufffd");
    assert.throws(() => te.decodeUtf8(new Uint8Array([0xff]), true));
  });
});
