import { create, ScalarType, type DescField, type DescMessage, type DescMethod } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Code, Interceptor, StreamRequest, StreamResponse, UnaryRequest, UnaryResponse } from "@connectrpc/connect";
import { AuditRecordSchema, type AuditRecord } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_pb.js";
import { ID_PATTERN, MIGRATION_KIND, PROJECT_ID_PATTERN, VM_KIND, type Clock, type IdGenerator, type Kind, type Principal, type Resource, type Store } from "@quantix/core";
import { codeLabel, peerKey, principalKey, toConnectError } from "@quantix/rpc";
import { classOf, type CallClass } from "./call-classes.js";

/** The header a client may name its request with; the server answers with the id it recorded. */
export const REQUEST_ID_HEADER = "x-request-id";
/** What a client's request id may be: short, and nothing that needs escaping. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Ids kept of one request at most. */
const MAX_TARGETS = 16;

/** Where records go (AuditWriter). */
export interface AuditSink {
  add(record: AuditRecord): Promise<void> | undefined;
}

/** The request fields of a method that name resources, read once per method. */
interface IdFields {
  readonly targets: readonly DescField[];
  readonly project: DescField | undefined;
  /** The response's `id` and `project_id`, for creates. */
  readonly createdId: DescField | undefined;
  readonly createdProject: DescField | undefined;
}

/**
 * Records every call that is not a read (call-classes.ts) as an AuditRecord, answered
 * or refused (its code is the one the client gets): who (principalKey, read when the
 * call ends, so the authentication interceptor inside this one has set it; anonymous
 * without), which RPC, the ids its request names and, for a create, the id it made, the
 * project, the time, the request id (the client's x-request-id when well formed, else a
 * new one; sent back in the x-request-id header), and the peer's address. Request fields
 * other than ids (`*_id`, `*_ids`, `id`) are never read, so no body, password or secret
 * reaches a record. Reads cost one Map lookup.
 *
 * Install it outermost of the added interceptors, so that what authentication, rate
 * limits and policy refuse is recorded.
 */
export function auditCalls(o: {
  sink: AuditSink;
  clock: Clock;
  ids: IdGenerator;
  /**
   * The project of the resource `id` of a service's kind ("" if unknown), asked before a
   * call whose request and answer name no project (DeleteVM): afterwards it may be gone.
   */
  projectOf?: (service: string, id: string) => string | Promise<string>;
}): Interceptor {
  const classes = new Map<DescMethod, CallClass>();
  const fields = new Map<DescMethod, IdFields>();
  return (next) => (req) => {
    // Reads go straight through: no async frame, no promise of ours (this runs on every call).
    let cls = classes.get(req.method);
    if (cls === undefined) classes.set(req.method, (cls = classOf(req.method)));
    return cls === "read" ? next(req) : recorded(next, req, cls);
  };

  async function recorded(next: Parameters<Interceptor>[0], req: UnaryRequest | StreamRequest, cls: CallClass): Promise<UnaryResponse | StreamResponse> {
    const start = o.clock.now();
    const t0 = performance.now();
    const given = req.header.get(REQUEST_ID_HEADER);
    const requestId = given !== null && REQUEST_ID.test(given) ? given : o.ids.newId();
    let f = fields.get(req.method);
    if (f === undefined) fields.set(req.method, (f = idFieldsOf(req.method)));
    const message = req.stream ? undefined : (req.message as Record<string, unknown>);
    let project = "";
    if (message && o.projectOf && !f.project && !f.createdProject && f.targets[0]) {
      const id = wellFormed(message[f.targets[0].localName], ID_PATTERN);
      // Answered at once ("") for a service whose resources have no project (a heartbeat's NodeService): no await.
      const asked = id === "" ? "" : o.projectOf(req.service.typeName, id);
      project = typeof asked === "string" ? asked : await asked.catch(() => "");
    }
    let res: UnaryResponse | StreamResponse;
    try {
      res = await next(req);
    } catch (err) {
      const mapped = toConnectError(err);
      mapped.metadata.set(REQUEST_ID_HEADER, requestId);
      await o.sink.add(recordOf(req, f, message, undefined, mapped.code, start, t0, requestId, o.ids, project));
      throw mapped;
    }
    res.header.set(REQUEST_ID_HEADER, requestId);
    if (cls === "write") await o.sink.add(recordOf(req, f, message, res.stream ? undefined : (res.message as Record<string, unknown>), 0, start, t0, requestId, o.ids, project));
    return res;
  }
}

function recordOf(
  req: UnaryRequest | StreamRequest,
  f: IdFields,
  message: Record<string, unknown> | undefined,
  answer: Record<string, unknown> | undefined,
  code: Code | 0,
  startMs: number,
  t0: number,
  requestId: string,
  ids: IdGenerator,
  resolved: string,
): AuditRecord {
  const p: Principal | undefined = req.contextValues.get(principalKey);
  const targets: string[] = [];
  let project = resolved;
  if (message) {
    for (const field of f.targets) {
      const v = message[field.localName];
      if (Array.isArray(v)) for (const x of v) keep(targets, x);
      else keep(targets, v);
    }
    if (f.project) project = wellFormed(message[f.project.localName], PROJECT_ID_PATTERN);
  }
  if (answer && f.createdId) keep(targets, answer[f.createdId.localName]);
  if (project === "" && answer && f.createdProject) project = wellFormed(answer[f.createdProject.localName], PROJECT_ID_PATTERN);
  return create(AuditRecordSchema, {
    id: ids.newId(),
    principal: p ? { kind: p.kind, id: p.id, name: p.name, tokenId: p.tokenId ?? "" } : { kind: "anonymous", id: "", name: "anonymous" },
    procedure: `/${req.service.typeName}/${req.method.name}`,
    targetIds: targets,
    projectId: project,
    code: codeLabel(code),
    time: timestampFromMs(startMs),
    requestId,
    sourceAddress: req.contextValues.get(peerKey).address,
    durationMs: Math.min(0xffffffff, Math.round(performance.now() - t0)),
  });
}

/** The request's id fields (`id`, `*_id` but project_id, `*_ids`), its project_id, and the response's id and project_id. */
export function idFieldsOf(method: Pick<DescMethod, "input" | "output">): IdFields {
  const strings = (m: DescMessage, name: (n: string) => boolean) =>
    m.fields.filter((x) => ((x.fieldKind === "scalar" && x.scalar === ScalarType.STRING) || (x.fieldKind === "list" && x.listKind === "scalar" && x.scalar === ScalarType.STRING)) && name(x.name));
  const isTarget = (n: string) => n === "id" || ((n.endsWith("_id") || n.endsWith("_ids")) && n !== "project_id");
  return {
    targets: strings(method.input, isTarget),
    project: strings(method.input, (n) => n === "project_id")[0],
    createdId: strings(method.output, (n) => n === "id").find((x) => x.fieldKind === "scalar"),
    createdProject: strings(method.output, (n) => n === "project_id")[0],
  };
}

function keep(out: string[], v: unknown): void {
  if (out.length >= MAX_TARGETS) return;
  const id = wellFormed(v, ID_PATTERN);
  if (id !== "" && !out.includes(id)) out.push(id);
}

/** `v` if it is a well-formed id; a malformed one is never stored (it was refused, and could be anything). */
function wellFormed(v: unknown, pattern: RegExp): string {
  return typeof v === "string" && pattern.test(v) ? v : "";
}

/** The project of a VM or a migration by id, for records of calls that name none (DeleteVM). */
export function projectResolver(store: Store): (service: string, id: string) => string | Promise<string> {
  const kinds: Record<string, Kind<Resource & { projectId: string }>> = {
    "Quantixkvm.compute.v1.VMService": VM_KIND as never,
    "Quantixkvm.compute.v1.MigrationService": MIGRATION_KIND as never,
  };
  return (service, id) => {
    const kind = kinds[service];
    return kind ? store.of(kind).get(id).then((o) => o?.projectId ?? "") : "";
  };
}
