import assert from "node:assert/strict";
import { test } from "node:test";
import { importsUnder } from "@quantix/testing/imports.js";

// STYLE's dependency rule: the agent imports core and api, not the control plane. What it
// still borrows from @quantix/server (the shared listener, logger and error interceptor)
// is listed here, so nothing new creeps in; the Prometheus writer moved to core.

const BORROWED = new Set(["@quantix/server/log.js", "@quantix/server/listener.js", "@quantix/server/rpc/interceptors.js"]);

test("agent code imports nothing of the control plane beyond the listed shared pieces", async () => {
  const found = (await importsUnder(new URL(".", import.meta.url).pathname, "@quantix/server")).filter((i) => !BORROWED.has(i.from));
  assert.deepEqual(found.map((i) => `${i.file}: ${i.from}`), []);
});
