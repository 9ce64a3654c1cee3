import { readFileSync, writeFileSync } from "node:fs";
import { withVmmStateTable } from "@quantix/agent";
import { withStateTable } from "@quantix/core";

// Rewrites the generated state tables: the control plane's power table in
// docs/api/vm-service.md and the host agent's in docs/api/vmm-service.md.
for (const [doc, rewrite] of [["vm-service.md", withStateTable], ["vmm-service.md", withVmmStateTable]] as const) {
  const path = new URL(`../docs/api/${doc}`, import.meta.url);
  writeFileSync(path, rewrite(readFileSync(path, "utf8")));
}
