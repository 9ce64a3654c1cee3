import { readFileSync, writeFileSync } from "node:fs";
import { withStateTable } from "@quantix/core/state-table.js";

// Rewrites the generated power state table in docs/api/vm-service.md.
const path = new URL("../docs/api/vm-service.md", import.meta.url);
writeFileSync(path, withStateTable(readFileSync(path, "utf8")));
