import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { notFound, QuantixError } from "../errors.js";
import type { ChangeType } from "../store.js";
import type { Finalizable, Kind, Resource } from "./kind.js";

/** What one write does to the stored object, decided the same way by every store. */
export interface PlannedWrite {
  readonly type: ChangeType;
  /** The new state (ADDED, MODIFIED), or the last state (DELETED); its resource_version is set by the store. */
  readonly object: Resource;
  /** The stored state before the write (MODIFIED, DELETED). */
  readonly previous?: Resource | undefined;
}

/** The rules a write is checked against. */
export interface PlanOptions {
  /** The version the writer based its write on; 0n or undefined: unconditional. */
  readonly base?: bigint | undefined;
  readonly actor?: string | undefined;
  /** The time a deletion is requested at. */
  readonly nowMs: number;
}

/**
 * Decides what a create, update or delete of `object` does, given the stored object
 * `current` (undefined when absent): NOT_FOUND, ALREADY_EXISTS (the id), ABORTED (a stale
 * base), INTERNAL (a write to a field another component owns). Applies the kind's
 * finalizer rules: a new object gets the kind's finalizers; a delete of an object with
 * finalizers marks it (deletion_requested_at) instead, and the update that removes the
 * last finalizer of a marked object deletes it. Returns undefined when the write changes
 * nothing (deleting an object already marked). `object` is the store's private copy and
 * may be changed.
 */
export function planWrite(kind: Kind<Resource>, op: "create" | "update" | "delete", object: Resource, current: Resource | undefined, o: PlanOptions): PlannedWrite | undefined {
  if (op === "create") {
    if (current) throw new QuantixError("already_exists", `${kind.name} '${object.id}' already exists`);
    if (kind.finalizers) {
      const f = object as unknown as Finalizable;
      f.finalizers = [...new Set([...kind.finalizers, ...f.finalizers])];
      delete f.deletionRequestedAt;
    }
    return { type: "ADDED", object };
  }
  if (!current) throw notFound(kind.name, object.id);
  checkBase(kind, current, o.base);
  if (op === "delete") {
    const f = current as unknown as Finalizable;
    const pending = kind.pendingFinalizers ? kind.pendingFinalizers(current).filter((x) => f.finalizers.includes(x)) : f.finalizers;
    if (!kind.finalizers || pending.length === 0) return { type: "DELETED", object: current, previous: current };
    if (f.deletionRequestedAt) return undefined;
    const marked = object as unknown as Finalizable;
    marked.deletionRequestedAt = timestampFromMs(o.nowMs);
    return { type: "MODIFIED", object, previous: current };
  }
  checkOwners(kind, current, object, o.actor);
  if (kind.finalizers) {
    const before = current as unknown as Finalizable;
    const after = object as unknown as Finalizable;
    // Only delete() requests deletion, and nothing takes the request back.
    after.deletionRequestedAt = before.deletionRequestedAt;
    if (after.deletionRequestedAt && after.finalizers.length === 0) return { type: "DELETED", object, previous: current };
  }
  return { type: "MODIFIED", object, previous: current };
}

/** ABORTED when the stored object is no longer at `base` (a write based on a stale read). */
export function checkBase(kind: Kind<Resource>, current: Resource, base: bigint | undefined): void {
  if (base !== undefined && base !== 0n && base !== current.resourceVersion) {
    throw new QuantixError("aborted", `${kind.name} '${current.id}' was changed: resource_version is ${current.resourceVersion}, not ${base}; read it again and retry`);
  }
}

/** INTERNAL when a write changes a field only other components may write: a bug, refused before it spreads. */
export function checkOwners(kind: Kind<Resource>, before: Resource, after: Resource, actor: string | undefined): void {
  for (const f of kind.owned ?? []) {
    if (f.owners.includes(actor ?? "")) continue;
    if (!same(f.value(before), f.value(after))) {
      throw new QuantixError("internal", `${f.path} of ${kind.name} '${before.id}' is written only by ${f.owners.join(" or ")}; '${actor ?? "an unnamed writer"}' tried to change it`);
    }
  }
}

function same(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) === JSON.stringify(b, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}
