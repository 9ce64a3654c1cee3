import { pathToFileURL } from "node:url";
import { VmStatus_State, VmStatus_StateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { decide, type PowerAction } from "@quantix/core";

const ACTIONS: PowerAction[] = ["start", "stop", "pause", "resume", "reboot", "suspend", "delete"];
const WORDS = { apply: "yes", noop: "no-op", force: "force", forbidden: "—" } as const;

/** The VM power state table as Markdown, generated from packages/core's `decide`. */
export function stateTableMarkdown(): string {
  const head = `| state | ${ACTIONS.map((a) => a).join(" | ")} |`;
  const rule = `|---|${ACTIONS.map(() => "---").join("|")}|`;
  const rows = VmStatus_StateSchema.values.map((v) => `| ${v.name} | ${ACTIONS.map((a) => WORDS[decide(a, v.number as VmStatus_State)]).join(" | ")} |`);
  return [head, rule, ...rows].join("\n");
}

/** Rewrites the table between the markers in docs/api/vm-service.md (`npm run docs`). */
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { readFileSync, writeFileSync } = await import("node:fs");
  const path = new URL("../docs/api/vm-service.md", import.meta.url);
  const doc = readFileSync(path, "utf8");
  const next = doc.replace(/(<!-- state-table:begin -->)[\s\S]*?(<!-- state-table:end -->)/, `$1\n${stateTableMarkdown()}\n$2`);
  writeFileSync(path, next);
}
