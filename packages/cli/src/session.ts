import { readFileSync } from "node:fs";
import { create, fromJson, type DescMethod, type Message } from "@bufbuild/protobuf";
import { ConnectError, Code, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CliError, EXIT, UsageError } from "./errors.js";
import { type Json, type ResourceDef, listField, method, resourceByName } from "./resources.js";
import type { Resolved } from "./config.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type AnyClient = Record<string, (req: unknown, opts?: { signal?: AbortSignal; timeoutMs?: number }) => unknown>;

/** A connection to one control plane, with the current project, and what the CLI does with it. */
export class Session {
  readonly transport: Transport;
  private projectIdCache: Promise<string | undefined> | undefined;

  constructor(
    readonly conn: Resolved,
    opts: { timeoutMs?: number } = {},
  ) {
    const interceptors: Interceptor[] = [];
    if (conn.token) {
      const token = conn.token;
      interceptors.push((next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      });
    }
    let ca: string | undefined;
    if (conn.caFile) {
      try {
        ca = readFileSync(conn.caFile, "utf8");
      } catch (err) {
        throw new UsageError(`cannot read the context's ca-file ${conn.caFile}: ${(err as Error).message}`);
      }
    }
    this.h2Options = { baseUrl: conn.url, interceptors, ca, timeoutMs: opts.timeoutMs };
    this.transport = createConnectTransport({
      baseUrl: conn.url,
      httpVersion: "1.1",
      interceptors,
      ...(ca ? { nodeOptions: { ca } } : {}),
      ...(opts.timeoutMs ? { defaultTimeoutMs: opts.timeoutMs } : {}),
    });
  }

  private h2: Transport | undefined;
  private readonly h2Options: { baseUrl: string; interceptors: Interceptor[]; ca: string | undefined; timeoutMs: number | undefined };

  /** An HTTP/2 transport, for client streams (UploadImage), which HTTP/1.1 cannot carry. */
  transportH2(): Transport {
    const o = this.h2Options;
    this.h2 ??= createConnectTransport({ baseUrl: o.baseUrl, httpVersion: "2", interceptors: o.interceptors, ...(o.ca ? { nodeOptions: { ca: o.ca } } : {}), ...(o.timeoutMs ? { defaultTimeoutMs: o.timeoutMs } : {}) });
    return this.h2;
  }

  client(r: ResourceDef): AnyClient {
    return createClient(r.service, this.transport) as unknown as AnyClient;
  }

  /** A unary call by method local name, with a request as a partial message. */
  async call(r: ResourceDef, rpc: string, req: object, signal?: AbortSignal): Promise<Message> {
    const m = method(r, rpc);
    const msg = create(m.input, req as never);
    return (await this.client(r)[rpc]!(msg, signal ? { signal } : {})) as Message;
  }

  /** A server stream by method local name. */
  stream(r: ResourceDef, rpc: string, req: object, signal?: AbortSignal): AsyncIterable<Message> {
    const m = method(r, rpc);
    return this.client(r)[rpc]!(create(m.input, req as never), signal ? { signal } : {}) as AsyncIterable<Message>;
  }

  /** The current project's id, when one is chosen (a name is looked up). */
  projectId(): Promise<string | undefined> {
    this.projectIdCache ??= (async () => {
      const p = this.conn.project;
      if (!p) return undefined;
      if (UUID.test(p)) return p;
      return this.resolve(resourceByName("project")!, p);
    })();
    return this.projectIdCache;
  }

  /** Does a request of this method take a project_id? */
  static hasProject(m: DescMethod): boolean {
    return m.input.fields.some((f) => f.localName === "projectId");
  }

  /** Every entity a list gives, page by page, with the list's resource version. */
  async listAll(r: ResourceDef, req: Json = {}, signal?: AbortSignal): Promise<{ items: Message[]; resourceVersion: bigint }> {
    const m = method(r, r.list);
    const field = listField(r).name;
    const base: Json = { ...req };
    if (!r.global && Session.hasProject(m) && base["projectId"] === undefined) {
      const p = await this.projectId();
      if (p) base["projectId"] = p;
    }
    const items: Message[] = [];
    let pageToken = "";
    let resourceVersion = 0n;
    for (let i = 0; i < 1000; i++) {
      const input = fromJson(m.input, base as never, { ignoreUnknownFields: false });
      const hasPaging = m.input.fields.some((f) => f.localName === "pageToken");
      if (hasPaging) Object.assign(input, { pageToken, pageSize: 500 });
      const res = (await this.client(r)[r.list]!(input, signal ? { signal } : {})) as Record<string, unknown>;
      items.push(...((res[field] as Message[]) ?? []));
      if (typeof res["resourceVersion"] === "bigint" && resourceVersion === 0n) resourceVersion = res["resourceVersion"];
      pageToken = typeof res["nextPageToken"] === "string" ? res["nextPageToken"] : "";
      if (!pageToken) break;
    }
    return { items, resourceVersion };
  }

  /**
   * The id of the entity a person named: an exact id, an exact name, or a unique id
   * prefix, among those the current project lists. Ambiguous → exit 4 listing the
   * candidates; none → exit 3.
   */
  async resolve(r: ResourceDef, ref: string): Promise<string> {
    if (!ref) throw new UsageError(`an empty ${r.title} name`);
    // A whole id is taken as is: the server names it if it does not exist (NOT_FOUND, exit 3).
    if (UUID.test(ref) && r.get) return ref;
    const { items } = await this.listAll(r);
    return pick(r, ref, items).id;
  }

  private refNameCache = new Map<string, Promise<Map<string, string>>>();

  /** Id → name of every entity of a resource (for columns holding its ids); empty when it cannot be listed. */
  refNames(r: ResourceDef): Promise<Map<string, string>> {
    let names = this.refNameCache.get(r.name);
    if (!names) {
      names = this.listAll(r).then(
        ({ items }) => new Map(items.map((m) => { const j = m as unknown as Json; return [String(j["id"] ?? ""), String((r.nameField ? j[r.nameField] : "") ?? "")] as const; }).filter(([id, name]) => id !== "" && name !== "")),
        () => new Map<string, string>(),
      );
      this.refNameCache.set(r.name, names);
    }
    return names;
  }

  /** The entity itself, by name, id or prefix. */
  async fetch(r: ResourceDef, ref: string): Promise<Message> {
    if (r.get) {
      const idField = r.idField ?? "id";
      const id = idField === "projectId" ? await this.resolve(resourceByName("project")!, ref) : await this.resolve(r, ref);
      return this.call(r, r.get, { [idField]: id });
    }
    const { items } = await this.listAll(r);
    return pick(r, ref, items).msg;
  }
}

const idOf = (m: Message) => String((m as unknown as Json)["id"] ?? "");

function pick(r: ResourceDef, ref: string, items: Message[]): { id: string; msg: Message } {
  const byId = items.find((m) => idOf(m) === ref);
  if (byId) return { id: ref, msg: byId };
  const nameOf = (m: Message) => (r.nameField ? String((m as unknown as Json)[r.nameField] ?? "") : "");
  const named = items.filter((m) => nameOf(m) === ref);
  if (named.length === 1) return { id: idOf(named[0]!), msg: named[0]! };
  if (named.length > 1) {
    throw new CliError(`the ${r.title} name '${ref}' is ambiguous: ${named.length} have it; name one by id`, EXIT.CONFLICT, named.map((m) => `${idOf(m)}  ${nameOf(m)}`));
  }
  const prefixed = items.filter((m) => idOf(m).startsWith(ref));
  if (prefixed.length === 1) return { id: idOf(prefixed[0]!), msg: prefixed[0]! };
  if (prefixed.length > 1) {
    throw new CliError(`the ${r.title} id prefix '${ref}' is ambiguous: ${prefixed.length} ids start with it`, EXIT.CONFLICT, prefixed.map((m) => `${idOf(m)}  ${nameOf(m)}`));
  }
  throw new CliError(`no ${r.title} named '${ref}' (nor with that id or id prefix)`, EXIT.NOT_FOUND);
}


/** Is this error NOT_FOUND from the server? */
export const isNotFound = (err: unknown) => err instanceof ConnectError && err.code === Code.NotFound;
