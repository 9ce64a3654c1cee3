import assert from "node:assert/strict";
import { open, mkdtemp, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { ConsoleRing } from "../../console-ring.js";
import { ConsoleFileTail } from "./console-file-tail.js";

test("the console file is truncated once it passes the bound, and output written after it still reaches the ring in order", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "quantix-console-tail-"));
  const file = path.join(dir, "console.log");
  // As the VMM does: one O_APPEND descriptor kept open for the VM's life.
  const vmm = await open(file, "a");
  const ring = new ConsoleRing(64 * 1024);
  const tail = new ConsoleFileTail(file, ring, 0, 60_000, 1000);
  try {
    const lines = Array.from({ length: 100 }, (_, i) => `line ${String(i).padStart(4, "0")}\n`);
    let written = 0;
    for (const [i, line] of lines.entries()) {
      await vmm.write(line);
      written += line.length;
      if (i % 10 === 9) {
        await tail.poll();
        assert.ok((await stat(file)).size < 1000, `the file stays under the bound (${(await stat(file)).size} bytes)`);
      }
    }
    await tail.poll();
    assert.equal(new TextDecoder().decode(ring.tail(64 * 1024)), lines.join(""), "every line, once, in order");
    assert.equal(ring.endOffset, written);
  } finally {
    await tail.stop();
    await vmm.close();
    await rm(dir, { recursive: true, force: true });
  }
});
