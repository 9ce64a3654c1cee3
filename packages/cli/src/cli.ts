import { create, toJson } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { Command, CommanderError, Option } from "commander";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { LoginRequestSchema, WhoAmIResponseSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { completeWords, completionScript } from "./completion.js";
import { configPath, loadConfig, resolveConnection, saveConfig, type ConnectionFlags, type Resolved } from "./config.js";
import { describeError, EXIT, ExitStatus, UsageError } from "./errors.js";
import { addImageExtras, addImageUpload, addVmMigrate, addMigrationExtras, addNodeExtras, addProjectExtras, addQuotaExtras, addSecurityGroupExtras, addVmConsole, addVmExtras } from "./extra-commands.js";
import { promptSecret, readLine, write, type Io } from "./io.js";
import { dataText, outputFormat, table } from "./output.js";
import { resourceCommand, type Runtime } from "./resource-commands.js";
import { RESOURCES } from "./resources.js";
import { Session } from "./session.js";

export type { Io } from "./io.js";

/** "90s", "5m", "1h", "300" (seconds) → ms. */
export function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--timeout '${v}' is not a duration: write 90s, 5m or 1h`);
  const n = Number(m[1]);
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "s"]);
}

const DEFAULT_WAIT_MS = 5 * 60_000;

/** The whole command tree; `rt` gives commands their session and streams. */
export function buildProgram(rt: Runtime, io: Io, state: { resolved?: Resolved; flags: ConnectionFlags }): Command {
  const program = new Command("quantix")
    .description("the Quantix command line: VMs, nodes, storage, networks and identity on a Quantix control plane (docs/cli.md)")
    .option("--url <url>", "the control plane (QUANTIX_URL; default: the context's, else http://127.0.0.1:8080)")
    .option("-p, --project <project>", "the project to act in, by name or id (QUANTIX_PROJECT)")
    .option("--context <name>", "a context of the config file (QUANTIX_CONTEXT)")
    .addOption(new Option("-o, --output <format>", "table, wide, json, yaml or name").default("table"))
    .showSuggestionAfterError(true)
    .configureHelp({ sortSubcommands: true })
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: (s, w) => w(oneLine(s)),
    })
    .exitOverride();
  const program0 = program;
  program0.hook("preAction", (_this, action) => {
    const g = action.optsWithGlobals() as Record<string, string | undefined>;
    state.flags = { ...(g["url"] ? { url: g["url"] } : {}), ...(g["project"] ? { project: g["project"] } : {}), ...(g["context"] ? { context: g["context"] } : {}) };
    outputFormat(g["output"]);
  });

  for (const r of RESOURCES) {
    const cmd = resourceCommand(rt, r);
    if (r.name === "vm") {
      addVmMigrate(rt, cmd);
      addVmExtras(rt, cmd);
      addVmConsole(rt, cmd);
    }
    if (r.name === "node") addNodeExtras(rt, cmd);
    if (r.name === "image") {
      addImageExtras(rt, cmd);
      addImageUpload(rt, cmd);
    }
    if (r.name === "security-group") addSecurityGroupExtras(rt, cmd);
    if (r.name === "project") addProjectExtras(rt, cmd);
    if (r.name === "quota") addQuotaExtras(rt, cmd);
    if (r.name === "migration") addMigrationExtras(rt, cmd);
    program.addCommand(cmd);
  }

  program
    .command("login")
    .description("log in with a username and password; the access token is kept in the current context")
    .option("-u, --username <name>", "the user (default: admin)", "admin")
    .option("--password-stdin", "read the password from stdin")
    .action(async (opts: { username: string; passwordStdin?: boolean }) => {
      const password = opts.passwordStdin ? await readLine(io.stdin) : await promptSecret(io, `Password for ${opts.username}: `);
      if (!password) throw new UsageError("an empty password");
      const conn = await connection(io, state);
      const s = new Session({ ...conn, token: undefined });
      const res = await createClient(IdentityService, s.transport).login(create(LoginRequestSchema, { username: opts.username, password }));
      const path = configPath(io.env);
      const cfg = await loadConfig(path);
      const ctx = cfg.contexts[conn.contextName] ?? { url: conn.url };
      if (state.flags.url) ctx.url = conn.url;
      ctx.token = res.accessToken;
      cfg.contexts[conn.contextName] = ctx;
      await saveConfig(path, cfg);
      write(io.stdout, `logged in to ${conn.url} as ${opts.username} (context ${conn.contextName}); the token is in ${path}`);
    });
  program
    .command("logout")
    .description("forget the current context's token")
    .action(async () => {
      const conn = await connection(io, state);
      const path = configPath(io.env);
      const cfg = await loadConfig(path);
      const ctx = cfg.contexts[conn.contextName];
      if (ctx?.token) {
        delete ctx.token;
        await saveConfig(path, cfg);
      }
      write(io.stdout, `logged out of context ${conn.contextName}`);
    });
  program
    .command("whoami")
    .description("who the control plane takes you for")
    .action(async () => {
      const res = await createClient(IdentityService, rt.session().transport).whoAmI({});
      const f = rt.output();
      if (f === "json" || f === "yaml") return write(io.stdout, dataText(f, toJson(WhoAmIResponseSchema, res)));
      write(io.stdout, `${res.principalKind} ${res.name} (${res.id})${res.systemAdmin ? ", system admin" : ""}`);
      const json = toJson(WhoAmIResponseSchema, res) as { projects?: { projectId: string; role?: string }[] };
      for (const p of json.projects ?? []) write(io.stdout, `  project ${p.projectId}: ${(p.role ?? "").replace(/^ROLE_/, "").toLowerCase()}`);
    });

  const ctxCmd = program.command("context").alias("contexts").description("control planes you talk to (like kubectl contexts or incus remotes)");
  ctxCmd
    .command("list")
    .alias("ls")
    .description("list the contexts")
    .action(async () => {
      const path = configPath(io.env);
      const cfg = await loadConfig(path);
      const f = rt.output();
      const redacted = Object.fromEntries(Object.entries(cfg.contexts).map(([n, c]) => [n, { ...c, ...(c.token ? { token: "(set)" } : {}) }]));
      if (f === "json" || f === "yaml") return write(io.stdout, dataText(f, { currentContext: cfg.currentContext, contexts: redacted }));
      if (f === "name") return write(io.stdout, Object.keys(cfg.contexts).join("\n"));
      write(io.stdout, table(["CURRENT", "NAME", "URL", "PROJECT", "AUTH"], Object.entries(cfg.contexts).map(([n, c]) => [n === cfg.currentContext ? "*" : "", n, c.url, c.project ?? "", c.token ? "token" : ""])));
    });
  ctxCmd
    .command("show")
    .description("show a context (default: the current one), its token hidden")
    .argument("[name]")
    .action(async (name: string | undefined) => {
      const cfg = await loadConfig(configPath(io.env));
      const n = name ?? state.flags.context ?? io.env["QUANTIX_CONTEXT"] ?? cfg.currentContext;
      const c = cfg.contexts[n];
      if (!c) throw new UsageError(`no context named '${n}'`);
      const f = rt.output();
      write(io.stdout, dataText(f === "json" ? "json" : "yaml", { name: n, current: n === cfg.currentContext, ...c, ...(c.token ? { token: "(set)" } : {}) }));
    });
  ctxCmd
    .command("use")
    .description("make a context the current one")
    .argument("<name>")
    .action(async (name: string) => {
      const path = configPath(io.env);
      const cfg = await loadConfig(path);
      if (!cfg.contexts[name]) throw new UsageError(`no context named '${name}' (quantix context add ${name} --url URL)`);
      cfg.currentContext = name;
      await saveConfig(path, cfg);
      write(io.stdout, `now using context ${name} (${cfg.contexts[name]!.url})`);
    });
  ctxCmd
    .command("add")
    .alias("set")
    .description("add or change a context")
    .argument("<name>")
    .option("--url <url>", "the control plane's URL")
    .option("--project <project>", "the project to act in")
    .option("--token <token>", "a bearer token (an API token's secret)")
    .option("--ca-file <file>", "the CA that signs the control plane's certificate (https)")
    .option("--use", "make it the current context")
    .action(async (name: string, _o: unknown, self: Command) => {
      // --url and --project are the program's options too: read them wherever they were given.
      const opts = self.optsWithGlobals() as { url?: string; project?: string; token?: string; caFile?: string; use?: boolean };
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) throw new UsageError(`context name '${name}': letters, digits, '.', '_' and '-' only`);
      const path = configPath(io.env);
      const cfg = await loadConfig(path);
      const c = cfg.contexts[name] ?? { url: "http://127.0.0.1:8080" };
      if (opts.url) {
        resolveConnection({ currentContext: name, contexts: {} }, {}, { url: opts.url });
        c.url = opts.url;
      }
      if (opts.project) c.project = opts.project;
      if (opts.token) c.token = opts.token;
      if (opts.caFile) c.caFile = opts.caFile;
      cfg.contexts[name] = c;
      if (opts.use) cfg.currentContext = name;
      await saveConfig(path, cfg);
      write(io.stdout, `context ${name}: ${c.url}${opts.use ? " (current)" : ""}`);
    });
  ctxCmd
    .command("remove")
    .alias("rm")
    .description("remove a context")
    .argument("<name>")
    .action(async (name: string) => {
      const path = configPath(io.env);
      const cfg = await loadConfig(path);
      if (!cfg.contexts[name]) throw new UsageError(`no context named '${name}'`);
      delete cfg.contexts[name];
      if (cfg.currentContext === name) cfg.currentContext = Object.keys(cfg.contexts)[0] ?? "default";
      await saveConfig(path, cfg);
      write(io.stdout, `removed context ${name}`);
    });

  program
    .command("completion")
    .description("a shell completion script: source <(quantix completion bash), or quantix completion zsh > ~/.zfunc/_quantix")
    .argument("<shell>", "bash or zsh")
    .action((shell: string) => {
      if (shell !== "bash" && shell !== "zsh") throw new UsageError(`completion for '${shell}': bash or zsh`);
      write(io.stdout, completionScript(shell));
    });
  // Commands made with `new Command` do not inherit these: every one answers in-process.
  const inherit = (c: Command) => {
    for (const sub of c.commands) {
      sub
        .exitOverride()
        .showSuggestionAfterError(true)
        .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s), outputError: (s, w) => w(oneLine(s)) });
      inherit(sub);
    }
  };
  inherit(program);
  return program;
}

/** commander's "error: unknown command 'lst'\n(Did you mean list?)" as one line. */
const oneLine = (s: string) => `Error: ${s.replace(/^error: /, "").replace(/\n\((Did you mean)/, (_m, d: string) => ` (${d.toLowerCase()}`).trimEnd()}\n`;

async function connection(io: Io, state: { resolved?: Resolved; flags: ConnectionFlags }): Promise<Resolved> {
  state.resolved ??= resolveConnection(await loadConfig(configPath(io.env)), io.env, state.flags);
  return state.resolved;
}

/**
 * The CLI as a function: parses `argv` (without node and the script), runs the command
 * against the control plane, writes to `io`, and returns the exit code (docs/cli.md).
 */
export async function run(argv: readonly string[], io: Io): Promise<number> {
  const state: { resolved?: Resolved; flags: ConnectionFlags } = { flags: {} };
  let session: Session | undefined;
  let outputFlag = "table";
  let resolvedForRun: Resolved | undefined;
  const rt: Runtime = {
    io,
    refNames: new Map(),
    session: () => {
      if (!session) {
        if (!resolvedForRun) throw new Error("the connection is not resolved yet");
        session = new Session(resolvedForRun);
      }
      return session;
    },
    output: () => outputFormat(outputFlag),
    waitTimeoutMs: (opts) => (opts["timeout"] ? parseDuration(String(opts["timeout"])) : DEFAULT_WAIT_MS),
  };
  if (argv[0] === "__complete") {
    // Completion: never an error, never a prompt; names from the server with a short timeout.
    try {
      const program = buildProgram(rt, io, state);
      const words = argv.slice(1);
      const out = await completeWords(program, words, async (flags) => {
        state.flags = flags;
        resolvedForRun = await connection(io, state);
        session = new Session(resolvedForRun, { timeoutMs: 2000 });
        return session;
      });
      if (out.length) write(io.stdout, out.join("\n"));
    } catch {
      // silent
    }
    return EXIT.OK;
  }
  const program = buildProgram(rt, io, state);
  program.hook("preAction", async (_this, action) => {
    outputFlag = String(action.optsWithGlobals()["output"] ?? "table");
    resolvedForRun = await connection(io, state);
  });
  try {
    await program.parseAsync([...argv], { from: "user" });
    if (argv.length === 0) {
      program.outputHelp();
      return EXIT.USAGE;
    }
    return EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help is 0; a group without its subcommand (commander.help: its help on stderr) and every other mistake is 2.
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return EXIT.OK;
      return EXIT.USAGE;
    }
    if (err instanceof ExitStatus) return err.exitCode;
    const { lines, exitCode } = describeError(err, resolvedForRun?.url ?? state.resolved?.url);
    write(io.stderr, lines.join("\n"));
    return exitCode;
  }
}
