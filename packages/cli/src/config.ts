import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { parse, stringify } from "yaml";
import { UsageError } from "./errors.js";

/** Where `npm start` listens (packages/server config: 127.0.0.1:8080). */
export const DEFAULT_URL = "http://127.0.0.1:8080";

/** One control plane as the CLI knows it, like a kubectl context or an incus remote. */
export interface Context {
  url: string;
  /** The current project (a name or an id), or absent for the server's default. */
  project?: string;
  /** A bearer token (from `quantix login`, or an API token's secret). */
  token?: string;
  /** A PEM file of the CA that signs the control plane's certificate (https URLs). */
  caFile?: string;
}

/** The config file (YAML): the current context's name and the contexts by name. */
export interface ConfigFile {
  currentContext: string;
  contexts: Record<string, Context>;
}

export type Env = Record<string, string | undefined>;

/** `$QUANTIX_CONFIG`, else `$XDG_CONFIG_HOME/quantix/config.yaml`, else `~/.config/quantix/config.yaml`. */
export function configPath(env: Env): string {
  if (env["QUANTIX_CONFIG"]) return env["QUANTIX_CONFIG"];
  const base = env["XDG_CONFIG_HOME"] || join(env["HOME"] || homedir(), ".config");
  return join(base, "quantix", "config.yaml");
}

/** No file yet: no contexts; the current one is "default", which is DEFAULT_URL until added. */
const emptyConfig = (): ConfigFile => ({ currentContext: "default", contexts: {} });

export async function loadConfig(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return emptyConfig();
    throw err;
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new UsageError(`the config file ${path} is not valid YAML: ${(err as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return emptyConfig();
  if (typeof doc !== "object" || Array.isArray(doc)) throw new UsageError(`the config file ${path} must be a YAML mapping`);
  const raw = doc as Record<string, unknown>;
  const contexts: Record<string, Context> = {};
  const rawContexts = raw["contexts"] ?? {};
  if (typeof rawContexts !== "object" || rawContexts === null || Array.isArray(rawContexts)) throw new UsageError(`${path}: contexts must be a mapping of names to {url, project, token, ca-file}`);
  for (const [name, c] of Object.entries(rawContexts as Record<string, unknown>)) {
    if (typeof c !== "object" || c === null) throw new UsageError(`${path}: contexts.${name} must be a mapping`);
    const o = c as Record<string, unknown>;
    const str = (k: string) => {
      const v = o[k];
      if (v !== undefined && v !== null && typeof v !== "string") throw new UsageError(`${path}: contexts.${name}.${k} must be a string`);
      return v ?? undefined;
    };
    const url = str("url");
    contexts[name] = { url: url ?? DEFAULT_URL };
    const project = str("project");
    const token = str("token");
    const caFile = str("ca-file");
    if (project) contexts[name].project = project;
    if (token) contexts[name].token = token;
    if (caFile) contexts[name].caFile = caFile;
  }
  const current = raw["current-context"];
  if (current !== undefined && typeof current !== "string") throw new UsageError(`${path}: current-context must be a string`);
  return { currentContext: current ?? Object.keys(contexts)[0] ?? "default", contexts };
}

/** Writes the file with mode 0600 in a directory of mode 0700 (it holds tokens), atomically. */
export async function saveConfig(path: string, cfg: ConfigFile): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const doc = {
    "current-context": cfg.currentContext,
    contexts: Object.fromEntries(
      Object.entries(cfg.contexts).map(([name, c]) => [name, { url: c.url, ...(c.project ? { project: c.project } : {}), ...(c.token ? { token: c.token } : {}), ...(c.caFile ? { "ca-file": c.caFile } : {}) }]),
    ),
  };
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, stringify(doc), { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

/** Flags that pick the control plane, above the environment, above the config file. */
export interface ConnectionFlags {
  url?: string;
  project?: string;
  context?: string;
  token?: string;
}

/** Where and as whom the CLI talks, with the name of the context it came from. */
export interface Resolved {
  contextName: string;
  url: string;
  project: string | undefined;
  token: string | undefined;
  caFile: string | undefined;
}

export function resolveConnection(cfg: ConfigFile, env: Env, flags: ConnectionFlags): Resolved {
  const contextName = flags.context ?? env["QUANTIX_CONTEXT"] ?? cfg.currentContext;
  const ctx = cfg.contexts[contextName];
  if (!ctx && (flags.context !== undefined || env["QUANTIX_CONTEXT"] !== undefined)) {
    throw new UsageError(`no context named '${contextName}' (quantix context list shows them: ${Object.keys(cfg.contexts).join(", ")})`);
  }
  const url = flags.url ?? env["QUANTIX_URL"] ?? ctx?.url ?? DEFAULT_URL;
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    throw new UsageError(`the URL '${url}' is not an http:// or https:// URL`);
  }
  return {
    contextName,
    url: url.replace(/\/+$/, ""),
    project: flags.project ?? env["QUANTIX_PROJECT"] ?? ctx?.project,
    token: flags.token ?? env["QUANTIX_TOKEN"] ?? ctx?.token,
    caFile: ctx?.caFile,
  };
}
