import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";

// STYLE's dependency rule: the agent imports core, api and rpc, not the control plane (the
// listener, logger and interceptors it borrowed moved to @quantix/rpc).

const BORROWED = new Set<string>([]);

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") && !e.name.endsWith(".contract.ts")) out.push(p);
  }
  return out;
}

test("agent code imports nothing of the control plane beyond the listed shared pieces", async () => {
  const root = new URL(".", import.meta.url).pathname;
  const found: string[] = [];
  for (const file of await sources(root)) {
    for (const m of (await readFile(file, "utf8")).matchAll(/from "(@quantix\/server[^"]*)"/g)) {
      if (!BORROWED.has(m[1]!)) found.push(`${file.slice(root.length)}: ${m[1]}`);
    }
  }
  assert.deepEqual(found, []);
});
