import { VmStatus_State, VmStatus_StateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { decide, type PowerAction } from "./power-actions.js";

const ACTIONS: PowerAction[] = ["start", "stop", "pause", "resume", "reboot", "suspend", "delete"];
const WORDS = { apply: "yes", noop: "no-op", force: "force", forbidden: "—" } as const;

/** The VM power state table as Markdown, for docs/api/vm-service.md (`npm run docs`). */
export function stateTableMarkdown(): string {
  const head = `| state | ${ACTIONS.join(" | ")} |`;
  const rule = `|---|${ACTIONS.map(() => "---").join("|")}|`;
  const rows = VmStatus_StateSchema.values.map((v) => `| ${v.name} | ${ACTIONS.map((a) => WORDS[decide(a, v.number as VmStatus_State)]).join(" | ")} |`);
  return [head, rule, ...rows].join("\n");
}

/** Replaces the generated table between its markers in a Markdown document. */
export function withStateTable(doc: string): string {
  return doc.replace(/(<!-- state-table:begin -->)[\s\S]*?(<!-- state-table:end -->)/, `$1\n${stateTableMarkdown()}\n$2`);
}
