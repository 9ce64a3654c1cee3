// Who is calling: the one shape every service's policy, quota, rate limit and audit line
// reads (issue 12). The control plane's authentication interceptor builds it from a
// token, a client certificate or local trust; the document gateway reads the same.

/** A role in one project (Keystone's admin / member / reader). */
export type ProjectRole = "admin" | "member" | "reader";

/** Scopes a token may be limited to (the MemoryGateway's, adr-0001); none means every scope its roles allow. */
export type Scope = "dom.read" | "dom.write";

/** What kind of caller a principal is. */
export type PrincipalKind =
  /** A person, logged in with a password (or an API token of theirs). */
  | "user"
  /** A machine identity, holding API tokens only. */
  | "service-account"
  /** An enrolled host agent, known by its client certificate: its node's id is its name. */
  | "agent"
  /** Local trust mode (loopback, no TLS configured): the caller is the machine's operator. */
  | "local";

/** An authenticated caller. */
export interface Principal {
  readonly kind: PrincipalKind;
  /** The user's, service account's or node's id (local: "local"). */
  readonly id: string;
  /** A readable name for logs and the audit trail (never a secret). */
  readonly name: string;
  /** A system administrator may do everything in every project. */
  readonly systemAdmin: boolean;
  /** Project id → the caller's role there. */
  readonly projects: ReadonlyMap<string, ProjectRole>;
  /** The id of the token the call came with (for revocation and the audit trail), if any. */
  readonly tokenId?: string;
  /** When the token's scopes are limited, the scopes it has. */
  readonly scopes?: readonly Scope[];
}

/** The principal of local trust mode: the operator of a control plane on loopback without TLS. */
export const LOCAL_PRINCIPAL: Principal = Object.freeze({ kind: "local", id: "local", name: "local operator", systemAdmin: true, projects: new Map<string, ProjectRole>() });
