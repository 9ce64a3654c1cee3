import { VM_ACTIONS, VM_STATES, decide, type VmAction } from "./vm-state-table.js";

const RPC: Record<VmAction, string> = { delete: "DeleteVm", boot: "BootVm", shutdown: "ShutdownVm", pause: "PauseVm", resume: "ResumeVm", reboot: "RebootVm", suspend: "SuspendVm" };
const WORDS = { apply: "yes", noop: "no-op", force: "force", forbidden: "—" } as const;

/**
 * The agent's state table (vm-state-table.ts) as Markdown, for docs/api/vmm-service.md
 * (`npm run docs`): one row per vmm.v1 state, one column per RPC.
 */
export function vmmStateTableMarkdown(): string {
  const head = `| state | ${VM_ACTIONS.map((a) => RPC[a]).join(" | ")} |`;
  const rule = `|---|${VM_ACTIONS.map(() => "---").join("|")}|`;
  const rows = VM_STATES.map((s) => `| ${s.toUpperCase()} | ${VM_ACTIONS.map((a) => WORDS[decide(a, s)]).join(" | ")} |`);
  return [head, rule, ...rows].join("\n");
}

/** Replaces the generated table between its markers in a Markdown document. */
export function withVmmStateTable(doc: string): string {
  return doc.replace(/(<!-- vmm-state-table:begin -->)[\s\S]*?(<!-- vmm-state-table:end -->)/, `$1\n${vmmStateTableMarkdown()}\n$2`);
}
