import { clone, create, equals, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { applyUpdateMask, commonViolations, copyMessage, invalidArgument, QuantixError, throwIfViolations, usageSum, type Clock, type IdGenerator, type Kind, type Resource, type Store, type TxOp, type Usage } from "@quantix/core";
import type { Charging } from "../quota/quota-ledger.js";
import { waitFor, waitGone } from "../services/wait.js";
import { requireWellFormedId } from "./resource-service.js";


/** A kind's rules for writes through the API: which paths users write, and its own checks. */
export interface WriteRules<T> {
  /** Fields (and paths below them) an update may write: `labels`, `description`, `spec`, `spec.taints`. */
  readonly writable: readonly string[];
  /** Paths under a writable one that users never write (`spec.desired_power_state`: power RPCs own it). */
  readonly readOnly?: readonly string[];
  /** Without an update mask, how the request changes the draft (default: a set message field, a non-empty map or string replaces its field). */
  readonly unmasked?: (draft: Record<string, unknown>, req: Record<string, unknown>) => void;
  /**
   * Checks the object as the write leaves it, and completes it (defaults, derived
   * fields): throws INVALID_ARGUMENT with every violation, or FAILED_PRECONDITION.
   * `current` is undefined on create.
   */
  readonly check?: (next: T, current: T | undefined) => void;
  /** How the kind's objects count against their project's quota: creates, resizes and removals are charged in their commit. */
  readonly charging?: Charging<T>;
}

/** A wait bounded by the request's deadline. */
export interface Budget {
  readonly ms: number;
  readonly signal: AbortSignal;
}

/**
 * The write side every resource service shares, for any declared kind: Create (id,
 * timestamps, generation 1, the kind's finalizers, the kind's checks), Update (a field
 * mask over the writable paths, or the kind's unmasked rule; optimistic concurrency on
 * resource_version; a new generation when the spec changes; an object being deleted
 * refuses), and Delete (finalizers: the object is marked and goes when its controllers
 * have cleaned up; the call waits for that within its budget).
 */
export class ResourceWriter<T extends Resource> {
  constructor(
    readonly kind: Kind<T>,
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly ids: IdGenerator,
    private readonly rules: WriteRules<T>,
  ) {}

  /**
   * Creates an object from `fields` (the request's fields that the kind's message has).
   * `also`, when given, adds writes to the same commit (written as `also.actor`): e.g. the
   * claims of the volumes a new VM names, which refuse the whole commit when they fail.
   */
  async create(fields: Record<string, unknown>, also?: { readonly ops: (created: T) => readonly TxOp[]; readonly actor: string; readonly usage?: readonly Usage[] }): Promise<T> {
    const now = timestampFromMs(this.clock.now());
    const o = create(this.kind.schema, fields as never) as unknown as T;
    const w = o as unknown as Record<string, unknown>;
    o.id = this.ids.newId();
    this.stamp(w, "createdAt", now);
    this.stamp(w, "updatedAt", now);
    if ("generation" in w) w["generation"] = 1n;
    this.checkAll(o, undefined);
    const c = this.rules.charging;
    const extra = also?.ops(o) ?? [];
    const actor = also?.actor ?? "api";
    if (!c && extra.length === 0) return this.store.of(this.kind).create(o, { actor });
    const ops: TxOp[] = [{ op: "create", kind: this.kind as never, object: o }, ...extra];
    // The other objects the ops create (a VM's own volumes) are charged with it.
    const [created] = c ? await c.ledger.commit(c.projectOf(o), usageSum([c.usage(o), ...(also?.usage ?? [])]), ops, actor) : await this.store.commit(ops, { actor });
    return created as T;
  }

  /**
   * Updates an object from an Update<X> request (`schema` its descriptor): its
   * `update_mask`, `resource_version` and the writable fields it carries. `settled`, when
   * given, makes the answer wait (within `budget`) until it holds for the object (a
   * controller's decision the answer should show). `extra`, when given, adds writes to
   * the update's commit (written as `actor`, then run again on fresh reads when the object
   * changed meanwhile): e.g. the use counts of the security groups a port joins and leaves.
   * It needs the kind's `charging` (a kind that charges nothing uses a zero usage).
   */
  async update(
    id: string,
    schema: DescMessage,
    req: Record<string, unknown> & { resourceVersion: bigint; updateMask?: { paths: string[] } | undefined },
    options: { budget?: Budget; settled?: (o: T) => boolean; extra?: (before: T, after: T) => readonly TxOp[]; actor?: string } = {},
  ): Promise<T> {
    requireWellFormedId("id", id, this.kind.idFormat);
    const top = this.topFields(schema);
    const mutate = (cur: T): T | undefined => {
      const c = cur as T & Record<string, unknown> & { deletionRequestedAt?: unknown };
      if (c.deletionRequestedAt) throw new QuantixError("failed_precondition", `cannot update ${this.kind.name} '${cur.id}': it is being deleted`);
      // The mask applies to a draft of the writable fields, which then replaces them.
      const draft = create(schema) as unknown as Record<string, unknown>;
      for (const f of top) draft[f.localName] = copyOf(f, c[f.localName]);
      const paths = req.updateMask?.paths ?? [];
      if (paths.length > 0) throwIfViolations(applyUpdateMask(schema, draft, req, paths, (p) => this.writable(p)));
      else (this.rules.unmasked ?? defaultUnmasked(top))(draft, req);
      // cur is a copy of the store's object (the store's update hands mutate its own copy).
      const nextT = copyMessage(cur);
      const next = nextT as unknown as Record<string, unknown>;
      for (const f of top) next[f.localName] = draft[f.localName];
      this.checkAll(nextT, cur);
      if (equals(this.kind.schema, cur as never, next as never)) return undefined;
      const spec = this.kind.schema.fields.find((f) => f.name === "spec");
      if (spec && "generation" in next && !equals(spec.message!, (c[spec.localName] ?? create(spec.message!)) as never, (next[spec.localName] ?? create(spec.message!)) as never)) {
        next["generation"] = (next["generation"] as bigint) + 1n;
      }
      this.stamp(next, "updatedAt", timestampFromMs(this.clock.now()));
      return nextT;
    };
    const c = this.rules.charging;
    if (options.extra && !c) throw new Error(`${this.kind.name}: an update with extra writes needs the kind's charging`);
    const actor = options.actor ?? "api";
    const updated = c
      ? await c.ledger.update(this.kind, id, mutate, c, { expectedVersion: req.resourceVersion, actor, ...(options.extra ? { extra: options.extra } : {}) })
      : await this.store.of(this.kind).update(id, mutate, { expectedVersion: req.resourceVersion, actor: "api" });
    const { budget, settled } = options;
    if (!budget || !settled || settled(updated)) return updated;
    return waitFor(this.store.of(this.kind), this.kind.name, updated.id, settled, budget.ms, budget.signal);
  }

  /**
   * Deletes an object after `check` accepts it (it does not run again for an object
   * already being deleted), then waits (within `budget`) until it is gone.
   */
  async delete(id: string, budget: Budget, check?: (current: T) => void): Promise<void> {
    requireWellFormedId("id", id, this.kind.idFormat);
    const coll = this.store.of(this.kind);
    const checkFirst = (cur: T) => {
      if (!(cur as { deletionRequestedAt?: unknown }).deletionRequestedAt) check?.(cur);
    };
    const c = this.rules.charging;
    if (c) await c.ledger.delete(this.kind, id, c, { actor: "api", check: checkFirst });
    else await coll.delete(id, checkFirst, { actor: "api" });
    await waitGone(coll, id, budget.ms, budget.signal);
  }

  /** The common fields' rules and the kind's, every violation reported at once. */
  private checkAll(next: T, cur: T | undefined): void {
    const common = commonViolations(next as unknown as { labels?: Record<string, string>; description?: string });
    try {
      this.rules.check?.(next, cur);
    } catch (err) {
      if (err instanceof QuantixError && err.code === "invalid_argument" && common.length > 0) throw invalidArgument([...common, ...err.violations]);
      throw err;
    }
    throwIfViolations(common);
  }

  /** Whether an update mask may name `path`. */
  private writable(path: string): boolean {
    if (this.rules.readOnly?.some((r) => path === r || path.startsWith(`${r}.`))) return false;
    return this.rules.writable.some((w) => path === w || path.startsWith(`${w}.`));
  }

  /** The request's fields that are writable fields of the kind's message. */
  private topFields(schema: DescMessage): DescField[] {
    const tops = new Set(this.rules.writable.map((w) => w.split(".")[0]!));
    return schema.fields.filter((f) => tops.has(f.name) && this.kind.schema.fields.some((k) => k.name === f.name));
  }

  private stamp(o: Record<string, unknown>, field: string, ts: unknown): void {
    if (this.kind.schema.fields.some((f) => f.localName === field)) o[field] = ts;
  }
}

/** A set message field, a non-empty map or string replaces its field; others keep theirs. */
function defaultUnmasked(top: readonly DescField[]) {
  return (draft: Record<string, unknown>, req: Record<string, unknown>) => {
    for (const f of top) {
      const v = req[f.localName];
      if (f.fieldKind === "message" ? v !== undefined : f.fieldKind === "map" ? Object.keys(v as object).length > 0 : v !== "" && v !== undefined) draft[f.localName] = copyOf(f, v);
    }
  };
}

function copyOf(f: DescField, v: unknown): unknown {
  if (v === undefined) return undefined;
  if (f.fieldKind === "message") return clone(f.message, v as never);
  if (f.fieldKind === "map") return { ...(v as object) };
  if (f.fieldKind === "list") return [...(v as unknown[])];
  return v;
}
