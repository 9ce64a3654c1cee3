import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PgliteDriver } from "./pglite-driver.js";
import { byteaFromHex, byteaParam } from "./pglite-options.js";

// The embedded driver sends bytea parameters as binary and reads bytea columns through Node's
// hex codec (pglite-options.ts) instead of PGlite's own byte-by-byte text conversion: the
// database must receive and return exactly the bytes.

let dir: string;
let driver: PgliteDriver;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "quantix-pglite-driver-"));
  driver = await PgliteDriver.open(dir);
});
after(async () => {
  await driver?.close();
  rmSync(dir, { recursive: true, force: true });
});

const samples = [new Uint8Array(0), Uint8Array.of(0), Uint8Array.of(0xff, 0x00, 0x5c, 0x78), Uint8Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) & 0xff)];

test("bytea parameters reach the database as their bytes, and come back the same", async () => {
  for (const bytes of samples) {
    const { rows } = await driver.query<{ hex: string; len: number; back: Uint8Array }>("SELECT encode($1::bytea, 'hex') AS hex, length($1::bytea) AS len, $1::bytea AS back", [bytes]);
    assert.equal(rows[0]!.hex, Buffer.from(bytes).toString("hex"));
    assert.equal(rows[0]!.len, bytes.length);
    assert.ok(rows[0]!.back instanceof Uint8Array);
    assert.deepEqual([...rows[0]!.back], [...bytes]);
  }
});

test("a bytea column written by SQL reads back as its bytes, also inside a transaction and a view of a larger buffer", async () => {
  const { rows } = await driver.transaction((tx) => tx.query<{ b: Uint8Array }>("SELECT decode('00ff10', 'hex') AS b"));
  assert.deepEqual([...rows[0]!.b], [0x00, 0xff, 0x10]);
  const big = Uint8Array.from({ length: 64 }, (_, i) => i);
  const view = big.subarray(10, 20);
  const back = await driver.query<{ b: Uint8Array }>("SELECT $1::bytea AS b", [view]);
  assert.deepEqual([...back.rows[0]!.b], [...view]);
});

test("the codec refuses what is not bytea in hex format", () => {
  assert.throws(() => byteaParam("\\x00"), /bytea/);
  assert.throws(() => byteaFromHex("abc"), /hex format/);
  assert.deepEqual([...byteaFromHex(`\\x${Buffer.from(byteaParam(Uint8Array.of(1, 2, 3))).toString("hex")}`)], [1, 2, 3]);
});
