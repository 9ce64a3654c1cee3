import type { Command, Option } from "commander";
import type { ConnectionFlags } from "./config.js";
import { FLAG_RESOURCES, NAME_ARG } from "./resource-commands.js";
import { resourceByName } from "./resources.js";
import type { Session } from "./session.js";

/**
 * The scripts call `quantix __complete WORD...` (the words after `quantix`, the last one
 * being completed, possibly empty) and offer its lines, as cobra does.
 */
export function completionScript(shell: "bash" | "zsh"): string {
  if (shell === "bash") {
    return `# bash completion for quantix: source <(quantix completion bash)
_quantix_complete() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  local IFS=$'\\n'
  local out
  out=$(quantix __complete "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
  COMPREPLY=( $(compgen -W "$out" -- "$cur") )
  return 0
}
complete -o default -F _quantix_complete quantix
`;
  }
  return `#compdef quantix
# zsh completion for quantix: quantix completion zsh > "\${fpath[1]}/_quantix", or source <(quantix completion zsh)
_quantix() {
  local -a candidates
  candidates=("\${(@f)$(quantix __complete "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -a candidates
}
if (( $+functions[compdef] )); then
  compdef _quantix quantix
fi
`;
}

const longFlags = (cmd: Command): string[] => (cmd.options as readonly Option[]).map((o) => o.long).filter((x): x is string => !!x);
const takesValue = (cmd: Command, flag: string): boolean => {
  const o = (cmd.options as readonly Option[]).find((x) => x.long === flag || x.short === flag);
  return !!o && (o.required || o.optional);
};

/** The candidates for the last word, given the words before it. */
export async function completeWords(program: Command, words: string[], connect: (flags: ConnectionFlags) => Promise<Session>): Promise<string[]> {
  const cur = words[words.length - 1] ?? "";
  const before = words.slice(0, -1);
  let cmd = program;
  const flags: ConnectionFlags = {};
  let positional = 0;
  for (let i = 0; i < before.length; i++) {
    const w = before[i]!;
    if (w.startsWith("-")) {
      const name = w.split("=")[0]!;
      const global = ["--url", "--project", "-p", "--context"].includes(name);
      if (!w.includes("=") && (takesValue(cmd, name) || takesValue(program, name))) {
        const v = before[i + 1];
        if (global && v !== undefined) Object.assign(flags, { [name === "-p" ? "project" : name.slice(2)]: v });
        i++;
      }
      continue;
    }
    const sub = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
    if (sub && positional === 0) cmd = sub;
    else positional++;
  }
  const prev = before[before.length - 1];
  const match = (xs: string[]) => xs.filter((x) => x.startsWith(cur));
  // The value of a flag: resource names for the flags that take them, nothing otherwise.
  if (prev && prev.startsWith("-") && !prev.includes("=") && (takesValue(cmd, prev) || takesValue(program, prev))) {
    if (prev === "-o" || prev === "--output") return match(["table", "wide", "json", "yaml", "name"]);
    const res = FLAG_RESOURCES[prev];
    return res ? match(await names(res, connect, flags)) : [];
  }
  if (cur.startsWith("-")) return match([...longFlags(cmd), ...longFlags(program), "--help"]);
  const subs = cmd.commands.filter((c) => !c.name().startsWith("__")).map((c) => c.name());
  if (subs.length > 0 && positional === 0) return match(subs);
  const res = NAME_ARG.get(cmd);
  if (res && positional === 0) return match(await names(res, connect, flags));
  return [];
}

async function names(resource: string, connect: (flags: ConnectionFlags) => Promise<Session>, flags: ConnectionFlags): Promise<string[]> {
  const r = resourceByName(resource);
  if (!r) return [];
  try {
    const s = await connect(flags);
    const { items } = await s.listAll(r);
    return items.map((m) => {
      const o = m as unknown as Record<string, unknown>;
      return String((r.nameField ? o[r.nameField] : undefined) || o["id"] || "");
    }).filter((x) => x !== "");
  } catch {
    return [];
  }
}
