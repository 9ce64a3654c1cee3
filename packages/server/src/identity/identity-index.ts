import type { ApiToken, ServiceAccount, SigningKey, User } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import type { RoleBinding } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { API_TOKEN_KIND, ROLE_BINDING_KIND, SERVICE_ACCOUNT_KIND, SIGNING_KEY_KIND, USER_KIND, type Kind, type Resource, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";

/**
 * What ended or changed a principal's right to act: a token revoked or deleted, a user or
 * service account deleted (UNAUTHENTICATED), or its roles changed (PERMISSION_DENIED: what
 * its open streams show was filtered by the roles it had).
 */
export interface Revocation {
  /** The token's id, or the user's or service account's id. */
  readonly id: string;
  readonly why: string;
  readonly code: "unauthenticated" | "permission_denied";
}

/**
 * Every replica's view of who may act: users, service accounts, role bindings, API tokens
 * (without secrets) and signing keys' public halves, listed once and then kept current by
 * the store's watch (which spans replicas: LISTEN/NOTIFY on PostgreSQL). A revoked token
 * or deleted user stops working on every replica as soon as its change arrives here;
 * `generation` moves on every change, so callers' caches know when to look again.
 */
export class IdentityIndex {
  readonly users = new Map<string, User>();
  readonly serviceAccounts = new Map<string, ServiceAccount>();
  readonly tokens = new Map<string, ApiToken>();
  readonly signingKeys = new Map<string, SigningKey>();
  /** Principal id → project id → binding. */
  readonly bindings = new Map<string, Map<string, RoleBinding>>();
  /** Incremented on every change of any of the above. */
  generation = 0;
  private readonly listeners = new Set<(r: Revocation) => void>();
  /** The store revision each kind's mirror has reached, and who waits for one. */
  private readonly reached = new Map<string, bigint>();
  private waiters: { kind: string; revision: bigint; done: () => void }[] = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
  ) {}

  /** Lists every kind, then follows their changes; resolves once everything is listed. */
  async start(): Promise<void> {
    await Promise.all([
      this.mirror(USER_KIND, (u, gone) => this.put(this.users, u, gone, "user deleted")),
      this.mirror(SERVICE_ACCOUNT_KIND, (s, gone) => this.put(this.serviceAccounts, s, gone, "service account deleted")),
      this.mirror(API_TOKEN_KIND, (t, gone) => {
        this.put(this.tokens, t, gone, "token deleted");
        if (!gone && t.revokedAt) this.revoked({ id: t.id, why: "the token was revoked", code: "unauthenticated" });
      }),
      this.mirror(SIGNING_KEY_KIND, (k, gone) => this.put(this.signingKeys, k, gone, "")),
      this.mirror(ROLE_BINDING_KIND, (b, gone) => this.putBinding(b, gone)),
    ]);
  }

  stop(): void {
    this.abort.abort();
    for (const w of this.waiters) w.done();
    this.waiters = [];
  }

  /**
   * Resolves once this replica's view of `kind` includes the change at `revision` (a write
   * just made here), or after `timeoutMs`: a role given is usable in the next call.
   */
  caughtUp(kind: Kind<Resource>, revision: bigint, timeoutMs = 5000): Promise<void> {
    if ((this.reached.get(kind.name) ?? -1n) >= revision) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(), timeoutMs);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve();
      };
      const waiter = { kind: kind.name, revision, done };
      this.waiters.push(waiter);
    });
  }

  private reach(kind: string, revision: bigint): void {
    if ((this.reached.get(kind) ?? -1n) < revision) this.reached.set(kind, revision);
    for (const w of this.waiters.filter((x) => x.kind === kind && x.revision <= revision)) w.done();
  }

  /** Calls `fn` for every revocation from now on; returns a function that stops it. */
  onRevoked(fn: (r: Revocation) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private put<T extends Resource>(map: Map<string, T>, o: T, gone: boolean, why: string): void {
    const before = map.get(o.id) as { systemAdmin?: boolean } | undefined;
    if (gone) {
      map.delete(o.id);
      if (why) this.revoked({ id: o.id, why: `the ${why.replace(" deleted", "")} was deleted`, code: "unauthenticated" });
      return;
    }
    map.set(o.id, o);
    if (before?.systemAdmin && !(o as { systemAdmin?: boolean }).systemAdmin) this.revoked({ id: o.id, why: "the caller is no longer a system admin", code: "permission_denied" });
  }

  private putBinding(b: RoleBinding, gone: boolean): void {
    let m = this.bindings.get(b.principalId);
    const before = m?.get(b.projectId);
    const changed = { id: b.principalId, why: `the caller's role in project ${b.projectId} changed`, code: "permission_denied" } as const;
    if (gone) {
      m?.delete(b.projectId);
      if (m?.size === 0) this.bindings.delete(b.principalId);
      if (before) this.revoked(changed);
      return;
    }
    if (!m) this.bindings.set(b.principalId, (m = new Map()));
    // A binding's project may change only by delete and create; replace by project.
    m.set(b.projectId, b);
    if (before && before.role !== b.role) this.revoked(changed);
  }

  private revoked(r: Revocation): void {
    for (const fn of this.listeners) fn(r);
  }

  /** Lists a kind into `apply`, then applies its changes; a failed watch lists again. Resolves after the first list. */
  private mirror<T extends Resource>(kind: Kind<T>, apply: (o: T, gone: boolean) => void): Promise<void> {
    const coll = this.store.of(kind);
    let listed: () => void;
    const first = new Promise<void>((resolve) => (listed = resolve));
    const run = async (): Promise<void> => {
      while (!this.abort.signal.aborted) {
        try {
          const page = await coll.list({ order: { field: kind.orderBy[0]!, desc: false }, limit: Number.MAX_SAFE_INTEGER, countTotal: false });
          const seen = new Set<string>();
          for (const o of page.items) {
            seen.add(o.id);
            apply(o, false);
          }
          this.forgetMissing(kind, seen, apply);
          this.generation++;
          this.reach(kind.name, page.revision);
          listed();
          for await (const ev of coll.watch(page.revision, this.abort.signal)) {
            if (ev.type !== "SYNCED") {
              apply(ev.object, ev.type === "DELETED");
              this.generation++;
            }
            this.reach(kind.name, ev.revision);
          }
        } catch (err) {
          if (this.abort.signal.aborted) return;
          this.log.log("warn", "identity index: watch failed, listing again", { kind: kind.name, error: String(err) });
          await new Promise((r) => setTimeout(r, 500).unref());
        }
      }
    };
    void run();
    return first;
  }

  /** After a new list, what the old one had and the new one lacks was deleted meanwhile. */
  private forgetMissing<T extends Resource>(kind: Kind<T>, seen: Set<string>, apply: (o: T, gone: boolean) => void): void {
    const maps: Record<string, Map<string, Resource> | undefined> = { [USER_KIND.name]: this.users, [SERVICE_ACCOUNT_KIND.name]: this.serviceAccounts, [API_TOKEN_KIND.name]: this.tokens, [SIGNING_KEY_KIND.name]: this.signingKeys };
    const map = maps[kind.name];
    if (map) {
      for (const [id, o] of [...map]) if (!seen.has(id)) apply(o as T, true);
      return;
    }
    for (const m of [...this.bindings.values()]) for (const b of [...m.values()]) if (!seen.has(b.id)) apply(b as unknown as T, true);
  }
}
