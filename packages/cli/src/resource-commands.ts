import { readFile } from "node:fs/promises";
import { fromJson, toJson, type DescMessage, type Message } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { Command } from "commander";
import { parse as parseYaml } from "yaml";
import { CliError, EXIT, UsageError } from "./errors.js";
import { readLine, write, type Io } from "./io.js";
import { cellText, dataText, flatten, jsonOf, shortIds, table, valueAt, type Column, type OutputFormat } from "./output.js";
import { type ActionDef, type FlagContext, type FlagDef, type Json, type ResourceDef, method, resourceByName, schemaOf, setPath, watchField } from "./resources.js";
import { isNotFound, Session } from "./session.js";

/** What every command gets: the session (made on first use), the output format, the streams. */
export interface Runtime {
  readonly io: Io;
  /** Names of the entities that columns refer to by id (ref columns), filled by {@link loadRefNames}. */
  readonly refNames: Map<string, Map<string, string>>;
  session(): Session;
  output(): OutputFormat;
  /** --timeout for --wait, in ms. */
  waitTimeoutMs(cmdOpts: Json): number;
}

/** Which commands complete a resource's names as their positional argument (for __complete). */
export const NAME_ARG = new WeakMap<Command, string>();
/** Flags whose values are a resource's names. */
export const FLAG_RESOURCES: Record<string, string> = {
  "--node": "node",
  "--to": "node",
  "--image": "image",
  "--network": "network",
  "--external-network": "network",
  "--vip-network": "network",
  "--pool": "pool",
  "--vm": "vm",
  "--volume": "volume",
  "--port": "port",
  "--security-group": "security-group",
  "--service-account": "service-account",
  "--project": "project",
  "-p": "project",
  "--user": "user",
};

const collect = (v: string, prev: string[] | undefined) => [...(prev ?? []), v];

export function addFlags(cmd: Command, flags: readonly FlagDef[] | undefined): void {
  for (const f of flags ?? []) {
    if (f.many) cmd.option(f.flags, f.about, collect);
    else cmd.option(f.flags, f.about);
  }
}

/** commander's attribute name of a flag: "--disk-size <n>" → diskSize. */
function attr(flags: string): string {
  const long = flags.split(/[ ,]+/).find((p) => p.startsWith("--"))!;
  return long.slice(2).replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

export async function applyFlags(req: Json, flags: readonly FlagDef[] | undefined, opts: Json, ctx: FlagContext): Promise<void> {
  for (const f of flags ?? []) {
    const v = opts[attr(f.flags)];
    if (v === undefined || v === false) continue;
    try {
      if (f.many) for (const one of v as string[]) await f.apply(req, one as never, ctx);
      else await f.apply(req, v as never, ctx);
    } catch (err) {
      if (err instanceof CliError || err instanceof ConnectError || err instanceof UsageError) throw err;
      const flag = f.flags.split(/[ ,]+/).find((x) => x.startsWith("--"))!;
      const msg = (err as Error).message;
      throw new UsageError(msg.startsWith(flag) ? msg : `${flag}: ${msg}`);
    }
  }
}

export function flagContext(rt: Runtime): FlagContext {
  return {
    resolve: (name, ref) => rt.session().resolve(resourceByName(name)!, ref),
    readFile: async (path) => {
      try {
        return await readFile(path, "utf8");
      } catch (err) {
        throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    },
  };
}

/** A request from a YAML or JSON file (the request message's JSON form). */
export async function fromFile(path: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text); // YAML is a superset of JSON
  } catch (err) {
    throw new UsageError(`${path} is neither YAML nor JSON: ${(err as Error).message.split("\n")[0]}`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new UsageError(`${path} must hold one mapping (the request's fields)`);
  return doc as Json;
}

/** The request message from its JSON form, bad fields named. */
export function requestOf(schema: DescMessage, json: Json, source: string): Message {
  try {
    return fromJson(schema, json as never);
  } catch (err) {
    throw new UsageError(`${source}: ${(err as Error).message}`);
  }
}

const idOf = (m: Message) => String((m as unknown as Json)["id"] ?? "");
const nameOf = (r: ResourceDef, m: Message) => (r.nameField ? String((m as unknown as Json)[r.nameField] ?? "") : "");
const label = (r: ResourceDef, m: Message) => (nameOf(r, m) ? `${r.title} ${nameOf(r, m)} (${idOf(m)})` : `${r.title} ${idOf(m) || (m as unknown as Json)["projectId"]}`);

/** Rows of entities as the chosen format prints them. */
export function printList(rt: Runtime, r: ResourceDef, items: Message[], format = rt.output()): void {
  const schema = schemaOf(r);
  const out = rt.io.stdout;
  if (format === "json" || format === "yaml") return write(out, dataText(format, items.map((m) => jsonOf(schema, m))));
  if (format === "name") return write(out, items.map((m) => nameOf(r, m) || idOf(m)).join("\n"));
  const { head, rows } = tableRows(r, items, format === "wide", rt.refNames);
  write(out, items.length === 0 ? `No ${r.title}s found.` : table(head, rows));
}

/** Reads the names the table's ref columns show (a node's hostname for its id); a failed read leaves ids. */
export async function loadRefNames(rt: Runtime, r: ResourceDef): Promise<void> {
  if (rt.output() !== "table" && rt.output() !== "wide") return;
  for (const c of columnsOf(r, rt.output() === "wide")) {
    if (!c.ref || rt.refNames.has(c.ref)) continue;
    const target = resourceByName(c.ref);
    if (target) rt.refNames.set(c.ref, await rt.session().refNames(target));
  }
}

function columnsOf(r: ResourceDef, wide: boolean): Column[] {
  return wide ? [...r.columns, ...r.wide] : [...r.columns];
}

/** A ref column's cell: the name of the entity whose id it holds, else the id. */
function refText(names: Runtime["refNames"], c: Column, text: string): string {
  return (c.ref && names.get(c.ref)?.get(text)) || text;
}

function tableRows(r: ResourceDef, items: Message[], wide: boolean, names: Runtime["refNames"], shorts?: Map<string, string>): { head: string[]; rows: string[][] } {
  const schema = schemaOf(r);
  const cols = columnsOf(r, wide);
  const short = shorts ?? (wide ? new Map<string, string>() : shortIds(items.map(idOf)));
  const now = Date.now();
  return {
    head: cols.map((c) => c.header),
    rows: items.map((m) => cols.map((c) => (c.path === "id" && !wide ? (short.get(idOf(m)) ?? idOf(m)) : refText(names, c, cellText(schema, m, c, now))))),
  };
}

/** One entity in the chosen format; a table is its fields, one per line. */
export function printOne(rt: Runtime, r: ResourceDef, m: Message, format = rt.output()): void {
  const schema = schemaOf(r);
  const out = rt.io.stdout;
  if (format === "json" || format === "yaml") return write(out, dataText(format, jsonOf(schema, m)));
  if (format === "name") return write(out, nameOf(r, m) || idOf(m));
  const rows = flatten(toJson(schema, m, { alwaysEmitImplicit: false }));
  write(out, table(["FIELD", "VALUE"], rows));
}

/** The entity in an action's answer: the answer itself, or its field of the entity's type (MigrateVMResponse.vm). */
function entityIn(r: ResourceDef, output: DescMessage, res: Message): Message | undefined {
  const schema = schemaOf(r);
  if (output.typeName === schema.typeName) return res;
  const f = output.fields.find((x) => x.fieldKind === "message" && x.message.typeName === schema.typeName);
  return f ? ((res as unknown as Json)[f.localName] as Message | undefined) : undefined;
}

/** The localName of the entity's state, or undefined when it has none. */
export function stateOf(r: ResourceDef, m: Message): string | undefined {
  if (!r.state) return undefined;
  return cellText(schemaOf(r), m, { header: "", path: r.state.path }) || undefined;
}

function failureReason(r: ResourceDef, m: Message): string {
  const schema = schemaOf(r);
  const parts: string[] = [];
  for (const p of r.state?.reason ?? []) {
    const v = valueAt(schema, m, p).value;
    if (typeof v === "string" && v) parts.push(v);
  }
  const conds = (valueAt(schema, m, "status.conditions").value as { type: string; status: number; reason: string; message: string }[] | undefined) ?? [];
  // ConditionStatus FALSE = 2: a condition that says what is wrong.
  for (const c of conds) if (c.status === 2 && c.message && !parts.some((p) => p.includes(c.message))) parts.push(`${c.type}: ${c.message}`);
  return parts.length ? parts.join("; ") : "no reason given";
}

/**
 * --wait: until the entity is in one of `states` (or gone, for "deleted"), a failed state
 * (exit 7 with the reason), or the timeout (exit 7). Follows the watch stream when the
 * resource has one, and reads the entity again on each change (and every few seconds).
 */
export async function waitFor(rt: Runtime, r: ResourceDef, id: string, states: readonly string[], timeoutMs: number, what: string): Promise<Message | undefined> {
  const s = rt.session();
  const deadline = Date.now() + timeoutMs;
  let last: Message | undefined;
  const idField = r.idField ?? "id";
  for (;;) {
    if (rt.io.signal?.aborted) throw new CliError(`interrupted while waiting for ${what}`, 130);
    try {
      last = r.get ? await s.call(r, r.get, { [idField]: id }) : (await s.listAll(r)).items.find((m) => idOf(m) === id);
      if (!last && states.includes("deleted")) return undefined;
    } catch (err) {
      if (isNotFound(err) && states.includes("deleted")) return undefined;
      throw err;
    }
    if (last) {
      const st = stateOf(r, last);
      if (st && states.includes(st)) return last;
      if (st && r.state?.failed.includes(st)) {
        throw new CliError(`${label(r, last)} is ${st}, not ${states.join(" or ")}: ${failureReason(r, last)}`, EXIT.WAIT);
      }
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      const st = last ? stateOf(r, last) : "gone";
      const why = last ? failureReason(r, last) : "";
      throw new CliError(`timed out after ${Math.round(timeoutMs / 1000)}s waiting for ${what} to be ${states.join(" or ")} (it is ${st ?? "unknown"}${why && why !== "no reason given" ? `: ${why}` : ""})`, EXIT.WAIT);
    }
    const rv = last ? (last as unknown as Json)["resourceVersion"] : undefined;
    await changeOrTimeout(rt, r, id, Math.min(left, 2000), typeof rv === "bigint" ? rv : 0n);
  }
}

/** Resolves on the next watch event about `id`, or after `ms` (a poll when there is no watch). */
async function changeOrTimeout(rt: Runtime, r: ResourceDef, id: string, ms: number, after: bigint): Promise<void> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), r.watch && after > 0n ? ms : Math.min(ms, 250));
  const pause = () => new Promise<void>((res) => (ac.signal.aborted ? res() : ac.signal.addEventListener("abort", () => res())));
  const onAbort = () => ac.abort();
  rt.io.signal?.addEventListener("abort", onAbort);
  try {
    if (!r.watch || after === 0n) return await pause();
    const field = watchField(r)!;
    const m = method(r, r.watch);
    const req: Json = {};
    if (Session.hasProject(m)) {
      const p = await rt.session().projectId();
      if (p) req["projectId"] = p;
    }
    if (m.input.fields.some((f) => f.localName === "resourceVersion")) req["resourceVersion"] = after;
    // The changes after the revision read: any about ours ends the wait.
    for await (const u of rt.session().stream(r, r.watch, req, ac.signal)) {
      const ent = (u as unknown as Json)[field] as Message | undefined;
      if (ent && idOf(ent) === id) return;
    }
    await pause();
  } catch {
    // Aborted by the timer, or the stream failed (a revision no longer kept): read again after a pause.
    await pause();
  } finally {
    clearTimeout(timer);
    ac.abort();
    rt.io.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * --watch: prints the current rows, then a row for each change from the Watch stream
 * until the run is aborted (Ctrl-C) or the stream ends. json/yaml print one
 * {type, object} document per change.
 */
export async function watchRows(rt: Runtime, r: ResourceDef, listReq: Json, onlyId?: string): Promise<void> {
  if (!r.watch) throw new UsageError(`${r.name}s cannot be watched: the API has no watch for them`);
  const s = rt.session();
  const format = rt.output();
  const listed = await s.listAll(r, listReq, rt.io.signal);
  const initial = onlyId ? listed.items.filter((m) => idOf(m) === onlyId) : listed.items;
  const wide = format === "wide";
  const cols = columnsOf(r, wide);
  let widths: number[] | undefined;
  const shorts = wide ? new Map<string, string>() : shortIds(initial.map(idOf));
  if (format === "table" || format === "wide") {
    const { head, rows } = tableRows(r, initial, wide, rt.refNames, shorts);
    // Room for a later row's longer cells: ids, names, a state and "(deleted)".
    widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length), i === 0 ? 8 : 6) + (i === 0 ? 0 : 2));
    write(rt.io.stdout, table(head, rows, widths));
  } else {
    printList(rt, r, initial, format);
  }
  const m = method(r, r.watch);
  const field = watchField(r)!;
  const req: Json = {};
  for (const f of m.input.fields) if (f.localName in listReq && f.localName !== "pageSize") req[f.localName] = listReq[f.localName];
  if (Session.hasProject(m) && req["projectId"] === undefined) {
    const p = await s.projectId();
    if (p) req["projectId"] = p;
  }
  if (m.input.fields.some((f) => f.localName === "resourceVersion") && listed.resourceVersion > 0n) req["resourceVersion"] = String(listed.resourceVersion);
  const watchReq = requestOf(m.input, req, "watch");
  const schema = schemaOf(r);
  try {
    for await (const u of s.stream(r, r.watch, watchReq, rt.io.signal)) {
      const ent = (u as unknown as Json)[field] as Message | undefined;
      const type = cellText(m.output, u, { header: "", path: "type" });
      if (!ent || type === "SYNCED") continue;
      if (onlyId && idOf(ent) !== onlyId) continue;
      if (format === "json" || format === "yaml") {
        const doc = { type, object: jsonOf(schema, ent) };
        write(rt.io.stdout, format === "json" ? JSON.stringify(doc) : `---\n${dataText("yaml", doc)}`);
      } else if (format === "name") {
        write(rt.io.stdout, `${type} ${nameOf(r, ent) || idOf(ent)}`);
      } else {
        if (!shorts.has(idOf(ent)) && !wide) shorts.set(idOf(ent), shortIds([...shorts.keys(), idOf(ent)]).get(idOf(ent))!);
        const { rows } = tableRows(r, [ent], wide, rt.refNames, shorts);
        const row = rows[0]!;
        if (type === "DELETED") row[row.length - 1] = `${row[row.length - 1]} (deleted)`;
        const fit = widths!.map((w, i) => Math.max(w, row[i]!.length));
        const line = table(cols.map(() => ""), [row], fit).split("\n").filter((l) => l.trim() !== "").join("\n");
        write(rt.io.stdout, line);
      }
    }
  } catch (err) {
    if (rt.io.signal?.aborted) return;
    throw err;
  }
}

/** The commands of one resource: list, show, create, delete, and its actions. */
export function resourceCommand(rt: Runtime, r: ResourceDef): Command {
  const cmd = new Command(r.name).description(`${r.title}s`).aliases([...r.aliases]);
  const ctx = flagContext(rt);
  const waitOpt = (c: Command) => c.option("--wait", "wait until it is done").option("--timeout <duration>", "how long --wait waits: 90s, 5m (default 5m)");

  const list = cmd
    .command("list")
    .alias("ls")
    .description(`list ${r.title}s${r.global ? "" : " of the current project"}`)
    .option("-w, --watch", "keep printing changes")
    .action(async (opts: Json) => {
      const req: Json = {};
      await applyFlags(req, r.listFlags, opts, ctx);
      await loadRefNames(rt, r);
      if (opts["watch"]) return watchRows(rt, r, req);
      const { items } = await rt.session().listAll(r, req);
      printList(rt, r, items);
    });
  addFlags(list, r.listFlags);

  const show = cmd
    .command("show")
    .alias("get")
    .description(`show one ${r.title}`)
    .argument("<ref>", r.nameField ? `${r.nameField}, id or id prefix` : "id or id prefix")
    .option("-w, --watch", "keep printing changes")
    .action(async (ref: string, opts: Json) => {
      const m = await rt.session().fetch(r, ref);
      if (opts["watch"]) return watchRows(rt, r, {}, idOf(m));
      printOne(rt, r, m);
    });
  NAME_ARG.set(show, r.name);

  if (r.create) {
    const m = method(r, r.create);
    const create = cmd.command("create").description(`create a ${r.title}`);
    if (r.createArg) create.argument(`[${r.createArg.name}]`, `the ${r.title}'s ${r.createArg.name}`);
    create.option("-f, --from-file <file>", `the ${m.input.name} as YAML or JSON (flags override its fields)`);
    addFlags(create, r.createFlags);
    waitOpt(create);
    create.action(async (...a: unknown[]) => {
      const argName = r.createArg ? (a[0] as string | undefined) : undefined;
      const opts = (r.createArg ? a[1] : a[0]) as Json;
      const req: Json = opts["fromFile"] ? await fromFile(opts["fromFile"] as string) : {};
      if (r.createArg && argName) setPath(req, r.createArg.field, argName);
      await applyFlags(req, r.createFlags, opts, ctx);
      if (opts["passwordStdin"]) req["password"] = await readLine(rt.io.stdin);
      if (Session.hasProject(m) && req["projectId"] === undefined) {
        const p = await rt.session().projectId();
        if (p) req["projectId"] = p;
      }
      if (r.createArg && !req[r.createArg.field]) throw new UsageError(`a ${r.title} needs a ${r.createArg.name}: quantix ${r.name} create NAME (or ${r.createArg.field} in --from-file)`);
      const res = await rt.session().call(r, r.create!, requestOf(m.input, req, opts["fromFile"] ? String(opts["fromFile"]) : "the request"));
      let ent = entityIn(r, m.output, res);
      if (!ent || m.output.fields.some((f) => f.localName === "secret")) {
        // CreateTokenResponse: the token and its secret, shown once.
        write(rt.io.stdout, rt.output() === "json" || rt.output() === "yaml" ? dataText(rt.output() as "json", toJson(m.output, res)) : tokenText(res));
        return;
      }
      if (opts["wait"] && r.state) {
        const states = (r.createWaitFor ?? []).filter((st) => st !== "STOPPED" || !req["startOnCreate"]);
        ent = (await waitFor(rt, r, idOf(ent), states, rt.waitTimeoutMs(opts), label(r, ent))) ?? ent;
      }
      if (rt.output() === "table") write(rt.io.stderr, `created ${label(r, ent)}`);
      await loadRefNames(rt, r);
      printList(rt, r, [ent]);
    });
  }

  if (r.delete) {
    const m = method(r, r.delete);
    const del = cmd
      .command("delete")
      .aliases(r.delete.startsWith("revoke") ? ["rm", "revoke"] : ["rm"])
      .description(`delete ${r.title}s`)
      .argument("<ref...>", "names, ids or id prefixes");
    if (m.input.fields.some((f) => f.localName === "force")) del.option("--force", "even if it is in use or running");
    waitOpt(del);
    NAME_ARG.set(del, r.name);
    del.action(async (refs: string[], opts: Json) => {
      for (const ref of refs) {
        const ent = await rt.session().fetch(r, ref);
        const req: Json = { [r.idField ?? "id"]: idOf(ent) };
        if (opts["force"]) req["force"] = true;
        await rt.session().call(r, r.delete!, req);
        if (opts["wait"]) await waitFor(rt, r, idOf(ent), ["deleted"], rt.waitTimeoutMs(opts), label(r, ent));
        write(rt.io.stdout, `deleted ${label(r, ent)}`);
      }
    });
  }

  for (const a of r.actions ?? []) cmd.addCommand(actionCommand(rt, r, a));
  return cmd;
}

function tokenText(res: Message): string {
  const o = res as unknown as { token?: { id: string; name: string; expiresAt?: never }; secret: string };
  const exp = o.token?.expiresAt ? new Date(timestampMs(o.token.expiresAt)).toISOString() : "never";
  return `token ${o.token?.name} (${o.token?.id}) expires ${exp}\nsecret (shown once): ${o.secret}`;
}

function actionCommand(rt: Runtime, r: ResourceDef, a: ActionDef): Command {
  const m = method(r, a.rpc);
  const c = new Command(a.name).description(a.about).argument("<ref>", `the ${r.title}`);
  for (const arg of a.args ?? []) c.argument(arg.many ? `<${arg.name}...>` : `<${arg.name}>`);
  addFlags(c, a.flags);
  if (a.waitFor) c.option("--wait", `wait until it is ${a.waitFor.join(" or ")}`).option("--timeout <duration>", "how long --wait waits: 90s, 5m (default 5m)");
  // Accepted everywhere, so scripts can pass it to any action: here the answer is already the outcome.
  else c.option("--wait", "accepted for uniformity: the change is complete when the command returns");
  NAME_ARG.set(c, r.name);
  const ctx = flagContext(rt);
  c.action(async (...all: unknown[]) => {
    const ref = all[0] as string;
    const positional = all.slice(1, 1 + (a.args?.length ?? 0));
    const opts = all[1 + (a.args?.length ?? 0)] as Json;
    const ent = await rt.session().fetch(r, ref);
    const req: Json = { [a.idField ?? "id"]: idOf(ent) };
    for (const [i, arg] of (a.args ?? []).entries()) {
      const v = positional[i] as string | string[];
      if (arg.resource) req[arg.field] = await rt.session().resolve(resourceByName(arg.resource)!, v as string);
      else if (arg.transform) {
        try {
          req[arg.field] = arg.transform(v as string);
        } catch (err) {
          throw new UsageError(`${arg.name}: ${(err as Error).message}`);
        }
      } else req[arg.field] = v;
    }
    await applyFlags(req, a.flags, opts, ctx);
    const res = await rt.session().call(r, a.rpc, requestOf(m.input, req, "the request"));
    let after = entityIn(r, m.output, res) ?? ent;
    if (opts["wait"] && a.waitFor) after = (await waitFor(rt, r, idOf(ent), a.waitFor, rt.waitTimeoutMs(opts), label(r, ent))) ?? after;
    await loadRefNames(rt, r);
    printList(rt, r, [after]);
  });
  return c;
}

