import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ChangeEventSchema, ChangeType, PathConflictSchema, VectorClockSchema, WriteOutcome, type ChangeEvent, type VectorClock } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import type { Violations } from "@quantix/core";
import { clockToWire, type VClock } from "./clock.js";
import type { DocChange, DocNode } from "./doc-engine.js";
import type { DocEvent, PathConflict, WriteResult } from "./doc-store.js";

// The MemoryGateway's messages on the wire, and the checks of their common fields:
// shared by the unary and streaming RPCs (gateway-routes.ts) and sessions (sessions.ts).

/** Request limits of the gateway (docs/api/memory-gateway.md). */
export const GATEWAY_LIMITS = {
  maxNodeIdBytes: 256,
  maxMetadataEntries: 64,
  maxMetadataKeyChars: 128,
  maxMetadataValueChars: 4096,
  maxSubscribeIds: 1000,
  pageSizeDefault: 100,
} as const;

export const OUTCOME: Record<WriteResult["outcome"], WriteOutcome> = {
  APPLIED: WriteOutcome.APPLIED,
  MERGED: WriteOutcome.MERGED,
  CONFLICT: WriteOutcome.CONFLICT,
  DUPLICATE: WriteOutcome.DUPLICATE,
};

/** A clock in its wire message. */
export function wireClock(clock: VClock): VectorClock {
  return create(VectorClockSchema, { entries: clockToWire(clock) });
}

export function wireConflicts(conflicts: readonly PathConflict[]) {
  return conflicts.map((c) => create(PathConflictSchema, { path: c.path, concurrentVersion: c.concurrentVersion }));
}

/** Checks a node id field: 1-256 bytes. */
export function validateNodeId(v: Violations, field: string, id: Uint8Array): void {
  if (id.length === 0) v.add(field, "REQUIRED", `a node id is 1-${GATEWAY_LIMITS.maxNodeIdBytes} bytes`);
  else if (id.length > GATEWAY_LIMITS.maxNodeIdBytes) v.add(field, "INVALID_LENGTH", `a node id is 1-${GATEWAY_LIMITS.maxNodeIdBytes} bytes, got ${id.length}`);
}

/** Checks a change's metadata: at most 64 entries, keys 1-128 characters, values at most 4096. */
export function validateMetadata(v: Violations, field: string, metadata: Record<string, string>): void {
  const keys = Object.keys(metadata);
  if (keys.length > GATEWAY_LIMITS.maxMetadataEntries) v.add(field, "OUT_OF_RANGE", `at most ${GATEWAY_LIMITS.maxMetadataEntries} entries, got ${keys.length}`);
  for (const k of keys.slice(0, GATEWAY_LIMITS.maxMetadataEntries)) {
    if (k.length === 0 || k.length > GATEWAY_LIMITS.maxMetadataKeyChars) v.add(`${field}[${JSON.stringify(k.slice(0, 140))}]`, "INVALID_LENGTH", `a key is 1-${GATEWAY_LIMITS.maxMetadataKeyChars} characters`);
    else if (metadata[k]!.length > GATEWAY_LIMITS.maxMetadataValueChars) v.add(`${field}[${JSON.stringify(k)}]`, "INVALID_LENGTH", `a value is at most ${GATEWAY_LIMITS.maxMetadataValueChars} characters, got ${metadata[k]!.length}`);
  }
}

/**
 * A change as a ChangeEvent: one frozen message per change, shared by every subscriber
 * and session that sends it (the gRPC fast path then encodes it once for all of them).
 */
export function changeEvent(c: DocChange): ChangeEvent {
  let e = changeEvents.get(c);
  if (!e) {
    e = Object.freeze(
      create(ChangeEventSchema, {
        type: c.type === "DELETED" ? ChangeType.DELETED : ChangeType.DIFF,
        nodeId: c.nodeId,
        version: c.version,
        diffBson: c.diff,
        vectorClock: wireClock(c.clock),
        metadata: { ...c.metadata },
        committedAt: timestampFromMs(c.committedMs),
        author: c.author,
        writerId: c.writerId,
      }),
    );
    changeEvents.set(c, e);
  }
  return e;
}

const changeEvents = new WeakMap<DocChange, ChangeEvent>();

/** A node's current document as a SNAPSHOT event. */
export function snapshotEvent(n: DocNode): ChangeEvent {
  return create(ChangeEventSchema, {
    type: ChangeType.SNAPSHOT,
    nodeId: n.nodeId,
    version: n.version,
    snapshotBson: n.document,
    vectorClock: wireClock(n.clock),
    metadata: { ...n.metadata },
    committedAt: timestampFromMs(n.updatedMs),
  });
}

export function docEvent(e: DocEvent): ChangeEvent {
  switch (e.type) {
    case "CHANGE":
      return changeEvent(e.change);
    case "SNAPSHOT":
      return snapshotEvent(e.node);
    case "SYNCED":
      return create(ChangeEventSchema, { type: ChangeType.SYNCED, version: e.version });
  }
}

