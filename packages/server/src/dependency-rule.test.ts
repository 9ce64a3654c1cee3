import assert from "node:assert/strict";
import { test } from "node:test";
import { importsUnder } from "@quantix/testing/imports.js";

// STYLE's dependency rule: the control plane reaches agents over vmm.v1, never by importing
// the agent package. Its composition root (main.ts) is the one exception: it hands the
// agent's in-process simulated host to the control plane for the demo nodes.

const ALLOWED = new Set(["main.ts"]);

test("control-plane code imports the agent package only in its composition root", async () => {
  const found = (await importsUnder(new URL(".", import.meta.url).pathname, "@quantix/agent")).filter((i) => !ALLOWED.has(i.file));
  assert.deepEqual(found, []);
});
