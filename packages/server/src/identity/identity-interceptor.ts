import type { DescMethod } from "@bufbuild/protobuf";
import type { Interceptor, StreamRequest, StreamResponse, UnaryRequest, UnaryResponse } from "@connectrpc/connect";
import { LOCAL_PRINCIPAL, notFound, PROJECT_ID_FORMAT, QuantixError, RESOURCE_ID_FORMAT, type IdFormat, type Principal, type ProjectRole, type Store } from "@quantix/core";
import { peerKey, principalKey, requestHeader, type Logger, type Peer } from "@quantix/rpc";
import { unauthenticated } from "./access-tokens.js";
import type { Authenticator } from "./authenticator.js";
import { cuttable, type Cut } from "./cuttable-stream.js";
import type { IdentityIndex } from "./identity-index.js";
import { policyOf, type Policy, type ProjectTarget } from "./policy.js";
import { roleIncludes } from "./roles.js";
import { visibleProjectsKey } from "./visible-projects.js";

/** What the identity interceptor needs. */
export interface IdentityInterceptorDeps {
  readonly auth: Authenticator;
  readonly index: IdentityIndex;
  readonly store: Store;
  /** Local trust mode: a call without a token is the machine's operator (LOCAL_PRINCIPAL). */
  readonly localTrust: boolean;
  readonly log: Logger;
  /**
   * The principal of a call without a token whose connection presented a client
   * certificate the server's CA verified (an enrolled agent: kind "agent", its node's id),
   * or undefined. Set by the TLS and enrollment work; without it, certificates are not principals.
   */
  readonly certificatePrincipal?: (peer: Peer) => Principal | undefined;
  /**
   * The per-caller rate limit (the rpc kit's rateLimit), run once the caller is known and
   * before its policy is checked: refused calls count, and a public call (Login) is
   * limited by its peer address.
   */
  readonly rateLimit?: Interceptor;
}

const NO_TOKEN = "a bearer token is required: log in with IdentityService/Login or create a token";
const NO_AGENT_CERTIFICATE =
  "an agent proves its node with the client certificate it got at enrollment, over TLS (QUANTIX_TLS_CERT and QUANTIX_CA_CERT on the control plane; quantix agent --join on the host, docs/api/tls-and-enrollment.md), or calls with a system admin's token; without TLS, only an agent on a control plane in local trust mode (loopback) needs neither";

type Req = UnaryRequest | StreamRequest;
type AnyResponse = UnaryResponse | StreamResponse;
type Msg = Record<string, unknown>;

/**
 * Authentication and authorization, one interceptor on every protocol path (ADR 0006):
 * reads the bearer token (one header, cheaply on the gRPC fast path), sets principalKey,
 * and enforces the RPC's declared policy (policy.ts): PERMISSION_DENIED naming the role
 * missing, NOT_FOUND for objects of projects the caller has no role in, lists and watches
 * filtered to the caller's projects. Streams opened with a token end with UNAUTHENTICATED
 * when the token is revoked or its owner deleted.
 */
export function identityInterceptor(d: IdentityInterceptorDeps): Interceptor {
  const policies = new WeakMap<DescMethod, Policy | null>();
  const streams = new Map<string, Set<Cut>>();
  d.index.onRevoked((r) => {
    const cuts = streams.get(r.id);
    if (!cuts) return;
    for (const cut of [...cuts]) cut(new QuantixError(r.code, `${r.why}; the stream ends (open it again)`));
  });
  const register = (ids: string[]) => (cut: Cut) => {
    for (const id of ids) {
      let s = streams.get(id);
      if (!s) streams.set(id, (s = new Set()));
      s.add(cut);
    }
    return () => {
      for (const id of ids) {
        const s = streams.get(id);
        s?.delete(cut);
        if (s?.size === 0) streams.delete(id);
      }
    };
  };

  const streamed = (principal: Principal, res: AnyResponse): AnyResponse => {
    if (!res.stream || principal.kind === "local") return res;
    const ids = principal.tokenId ? [principal.tokenId, principal.id] : [principal.id];
    return { ...res, message: cuttable(res.message, register(ids)) };
  };

  const chain: Chain = { d, policies, streamed };
  // Written without async functions: a unary call with a known token takes no extra promise.
  // Nothing here is a named function made per call (tsx's keepNames names each one with a defineProperty).
  return (next) => {
    const limit = d.rateLimit;
    const publicNext = limit ? limit(next) : next;
    // The principal is in the call's context and its policy in `policies` when this runs.
    const limited = limit ? limit(((req: Req) => authorized(chain, next, req)) as never) : undefined;
    return (req) => {
      let policy = policies.get(req.method);
      if (policy === undefined) {
        policy = policyOf(`${req.service.typeName}/${req.method.name}`) ?? null;
        policies.set(req.method, policy);
      }
      if (policy === null) return Promise.reject(new QuantixError("permission_denied", `${req.service.typeName}/${req.method.name} has no declared policy; nobody may call it`));
      if (policy.access === "public") return publicNext(req);
      let principal: Principal | Promise<Principal>;
      try {
        principal = authenticate(d, req, policy);
      } catch (err) {
        return Promise.reject(err);
      }
      if (principal instanceof Promise) return principal.then((p) => proceed(chain, next, limited, req, p));
      try {
        return proceed(chain, next, limited, req, principal);
      } catch (err) {
        return Promise.reject(err);
      }
    };
  };
}

/** What the interceptor's per-call functions share (made once per interceptor). */
interface Chain {
  readonly d: IdentityInterceptorDeps;
  readonly policies: WeakMap<DescMethod, Policy | null>;
  readonly streamed: (principal: Principal, res: AnyResponse) => AnyResponse;
}

/** The call with its caller known: through the rate limit, when there is one, to its authorization. */
function proceed(c: Chain, next: (req: Req) => Promise<AnyResponse>, limited: ((req: Req) => Promise<AnyResponse>) | undefined, req: Req, principal: Principal): Promise<AnyResponse> {
  req.contextValues.set(principalKey, principal);
  return limited ? limited(req) : authorized(c, next, req);
}

/** The call's policy enforced for its principal (both known when this runs), then the call. */
function authorized(c: Chain, next: (req: Req) => Promise<AnyResponse>, req: Req): Promise<AnyResponse> {
  const { d, streamed } = c;
  const principal = req.contextValues.get(principalKey)!;
  const known = c.policies.get(req.method)!;
  if (principal.scopes) checkScope(principal, known, req.method);
  if (principal.systemAdmin) return principal.kind === "local" ? next(req) : next(req).then((res) => streamed(principal, res));
  if (req.stream) {
    // A streaming request's message is read only when the policy needs it (never for a service not built yet).
    if (known.access !== "project" || known.target.from === "any-project") return Promise.resolve(settled(authorize(d, principal, known, {}, req))).then(() => next(req)).then((res) => streamed(principal, res));
    return firstMessage(req).then(async ({ message, req: forward }) => {
      await settled(authorize(d, principal, known, message, forward));
      return streamed(principal, await next(forward));
    });
  }
  const checked = authorize(d, principal, known, req.message as Msg, req);
  if (checked === undefined) return next(req);
  if (typeof checked === "function") return next(req).then((res) => (checked(res.message as Msg), res));
  return checked.then(() => next(req));
}

/** The caller: at once for local trust or a token already verified, else a promise. */
function authenticate(d: IdentityInterceptorDeps, req: Req, policy: Policy): Principal | Promise<Principal> {
  const header = requestHeader(req, "authorization");
  if (header === null) {
    if (d.certificatePrincipal) {
      const peer = req.contextValues.get(peerKey);
      const agent = peer.certificate ? d.certificatePrincipal(peer) : undefined;
      if (agent) return agent;
    }
    if (d.localTrust) return LOCAL_PRINCIPAL;
    throw unauthenticated(policy.access === "agent" ? NO_AGENT_CERTIFICATE : NO_TOKEN);
  }
  const token = bearerToken(header);
  return d.auth.cached(token) ?? d.auth.authenticate(token);
}

/** The token of an `Authorization: Bearer <token>` header (the scheme in any case), without a regular expression on the hot path. */
function bearerToken(header: string): string {
  if (header.length > 7 && header.charCodeAt(6) === 32 && header.slice(0, 6).toLowerCase() === "bearer") {
    // HTTP already refused control characters in header values; a token has no space.
    const token = header.slice(7).trim();
    if (token !== "" && !token.includes(" ")) return token;
  }
  throw unauthenticated("the authorization header must be 'Bearer <token>'");
}

/** A token limited to scopes calls only RPCs needing one of them (and WhoAmI). */
function checkScope(p: Principal, policy: Policy, method: DescMethod): void {
  if (!p.scopes || (method.name === "WhoAmI" && method.parent.typeName === "Quantixkvm.identity.v1.IdentityService")) return;
  if (policy.scope && p.scopes.includes(policy.scope)) return;
  throw new QuantixError("permission_denied", `the token is limited to the scopes ${p.scopes.join(", ")}; this call needs ${policy.scope ? `the scope ${policy.scope}` : "a token without scope limits"}`);
}

/**
 * Checks a caller who is not a system admin (throws when it may not call): undefined when
 * it may; a check of the response when the policy reads the project from it; a promise
 * when the object's project must be read from the store first.
 */
function authorize(d: IdentityInterceptorDeps, p: Principal, policy: Policy, msg: Msg, req: Req): undefined | ((res: Msg) => void) | Promise<void> {
  switch (policy.access) {
    case "authenticated":
    case "cluster-read":
      return undefined;
    case "system-admin":
      throw new QuantixError("permission_denied", "requires system admin");
    case "agent": {
      if (p.kind !== "agent") throw new QuantixError("permission_denied", "requires an enrolled agent (its node's client certificate) or system admin");
      // An agent acts for its own node only (UpdateHeartbeat's id, RegisterNode's node_id).
      const node = (msg["id"] ?? msg["nodeId"]) as string | undefined;
      if (node && node !== p.id) throw new QuantixError("permission_denied", `an agent acts for its own node only (${p.id})`);
      return undefined;
    }
    case "project":
      break;
    case "public":
      return undefined;
    default: {
      const never: never = policy;
      throw new Error(`unknown policy ${String(never)}`);
    }
  }
  return authorizeTarget(d, p, policy.role, policy.target, msg, req);
}

/** The project check of one target of a project policy (see authorize). */
function authorizeTarget(d: IdentityInterceptorDeps, p: Principal, need: ProjectRole, t: ProjectTarget, msg: Msg, req: Req): undefined | ((res: Msg) => void) | Promise<void> {
  switch (t.from) {
    case "either": {
      const chosen = t.targets.find((x) => fieldValue(msg, x.field.split(".")[0]!) !== undefined);
      return chosen ? authorizeTarget(d, p, need, chosen, msg, req) : undefined;
    }
    case "any-project":
      if ([...p.projects.values()].some((r) => roleIncludes(r, need))) return undefined;
      throw new QuantixError("permission_denied", `requires role ${need} in a project`);
    case "request": {
      const project = (fieldValue(msg, t.field) as string | undefined) || t.dflt || "";
      // An empty or malformed project id reaches the handler, which says what is wrong with it.
      if (!wellFormed(project, PROJECT_ID_FORMAT)) return undefined;
      requireRole(p, project, need, t.hide ? () => notFound("project", project) : undefined);
      return undefined;
    }
    case "target":
    case "object": {
      const picked = t.from === "object" ? { kind: t.kind, id: (fieldValue(msg, t.field) as string | undefined) ?? "" } : t.pick(msg);
      if (!picked) return undefined;
      const { kind, id } = picked;
      if (!wellFormed(id, kind.idFormat ?? RESOURCE_ID_FORMAT)) return undefined;
      const hidden = () => notFound(kind.name, id);
      if (t.from === "object" && t.after) return (res) => requireRole(p, (res["projectId"] as string) ?? "", need, hidden);
      return d.store
        .of(kind)
        .get(id)
        .then((o) => {
          // A missing object is the handler's NOT_FOUND, the same words as a hidden one.
          if (o) requireRole(p, (o as { projectId?: string }).projectId ?? "", need, hidden);
        });
    }
    case "list": {
      const asked = msg["projectId"];
      if (typeof asked === "string" && asked !== "") {
        if (wellFormed(asked, PROJECT_ID_FORMAT)) requireRole(p, asked, need);
        return undefined;
      }
      const visible = [...p.projects].filter(([, r]) => roleIncludes(r, need)).map(([id]) => id);
      if (t.cluster) visible.push("");
      req.contextValues.set(visibleProjectsKey, visible);
      return undefined;
    }
  }
}

/** A stream's authorization, as a promise or nothing (a stream has no one response to check afterwards). */
function settled(r: ReturnType<typeof authorize>): Promise<void> | undefined {
  return typeof r === "function" ? undefined : r;
}

/** PERMISSION_DENIED naming the role missing; `hide` (for a caller with no role there at all) answers as if the object did not exist. */
function requireRole(p: Principal, project: string, need: ProjectRole, hide?: () => QuantixError): void {
  const have = p.projects.get(project);
  if (roleIncludes(have, need)) return;
  if (!have && hide) throw hide();
  throw new QuantixError("permission_denied", `requires role ${need} in project ${project}${have ? ` (the caller is ${have})` : ""}`);
}

function wellFormed(id: string, format: IdFormat): boolean {
  return typeof id === "string" && id !== "" && format.pattern.test(id);
}

const camelCache = new Map<string, string>();
/**
 * A request's field by its proto path (`project_id`, `create.project_id`), through oneof
 * members (`image_id` of ImportImage's `target`); undefined when not set.
 */
function fieldValue(msg: Msg, path: string): unknown {
  let cur: unknown = msg;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    const o = cur as Record<string, unknown>;
    const name = camel(part);
    if (name in o) cur = o[name];
    else cur = Object.values(o).find((v): v is { case: string; value: unknown } => typeof v === "object" && v !== null && (v as { case?: unknown }).case === name)?.value;
  }
  return cur;
}

function camel(field: string): string {
  let c = camelCache.get(field);
  if (c === undefined) camelCache.set(field, (c = field.replace(/_([a-z])/g, (_m, ch: string) => ch.toUpperCase())));
  return c;
}

/** Reads a streaming request's first message, and a request that still yields it. */
async function firstMessage(req: StreamRequest): Promise<{ message: Msg; req: StreamRequest }> {
  const it = req.message[Symbol.asyncIterator]();
  const first = await it.next();
  async function* rest(): AsyncGenerator<unknown> {
    if (first.done) return;
    yield first.value;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  return { message: (first.done ? {} : first.value) as Msg, req: { ...req, message: rest() } as StreamRequest };
}

