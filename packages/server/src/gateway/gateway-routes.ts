import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import { ChangeType, ConflictPolicy, MemoryGateway, NodeInfoSchema, VersionInfoSchema, type ChangeEvent } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { encodePageToken, invalidArgument, isPushIterable, mapPush, parsePageRequest, throwIfViolations, Violations } from "@quantix/core";
import { route, type Route } from "@quantix/rpc";
import { callerOf } from "../identity/principals.js";
import { clockFromWire, validateClock, validateWriterId } from "./clock.js";
import type { DocEvent, DocStore } from "./doc-store.js";
import { parseDiff } from "./diff.js";
import type { SessionHub } from "./sessions.js";
import { docEvent, GATEWAY_LIMITS, OUTCOME, validateMetadata, validateNodeId, wireClock, wireConflicts } from "./wire.js";

/** A stream that fails at once (a request refused before it starts). */
async function* failed(err: Error): AsyncGenerator<never> {
  throw err;
}

/** A pulled watch's events on the wire. */
async function* mapped(events: AsyncIterable<DocEvent>): AsyncGenerator<ChangeEvent> {
  for await (const e of events) yield docEvent(e);
}

/** The author of a call's changes: the caller's name. */
function authorOf(ctx: HandlerContext): string {
  return callerOf(ctx).name;
}

/** Reads a node id carried in a page token (hex). */
function tokenId(id: string): Uint8Array {
  return Buffer.from(id, "hex");
}

/**
 * virtualdom.v1.MemoryGateway: the document store's RPCs (docs/api/memory-gateway.md),
 * CollaborativeSession through the session hub.
 */
export function memoryGatewayRoute(docs: DocStore, sessions: SessionHub): Route {
  return route(MemoryGateway, {
    async writeDiff(req, ctx) {
      const v = new Violations();
      validateNodeId(v, "node_id", req.nodeId);
      validateWriterId(v, "writer_id", req.writerId, false);
      validateClock(v, "vector_clock", req.vectorClock, req.writerId);
      validateMetadata(v, "metadata", req.metadata);
      v.enumValue("on_conflict", req.onConflict, [ConflictPolicy.LAST_WRITER_WINS, ConflictPolicy.REJECT]);
      throwIfViolations(v.list);
      const diff = parseDiff(req.diffBson, "diff_bson");
      const r = await docs.write({
        nodeId: req.nodeId,
        diff,
        diffBytes: req.diffBson,
        clock: clockFromWire(req.vectorClock!.entries),
        writerId: req.writerId,
        metadata: req.metadata,
        author: authorOf(ctx),
        rejectConflicts: req.onConflict === ConflictPolicy.REJECT,
      });
      return { success: true, newVersion: r.version, outcome: OUTCOME[r.outcome], concurrentVersions: [...r.concurrentVersions], conflicts: wireConflicts(r.conflicts), vectorClock: wireClock(r.clock) };
    },

    async readSnapshot(req) {
      const v = new Violations();
      validateNodeId(v, "node_id", req.nodeId);
      throwIfViolations(v.list);
      const s = await docs.read(req.nodeId, req.version);
      return { nodeId: s.nodeId, version: s.version, snapshotBson: s.document, vectorClock: wireClock(s.clock), metadata: { ...s.metadata }, updatedAt: timestampFromMs(s.updatedMs) };
    },

    subscribeChanges(req, ctx) {
      const v = new Violations();
      if (req.nodeIds.length > GATEWAY_LIMITS.maxSubscribeIds) v.add("node_ids", "OUT_OF_RANGE", `at most ${GATEWAY_LIMITS.maxSubscribeIds} ids, got ${req.nodeIds.length}; follow a prefix instead (node_id_prefix)`);
      req.nodeIds.slice(0, GATEWAY_LIMITS.maxSubscribeIds).forEach((id, i) => validateNodeId(v, `node_ids[${i}]`, id));
      if (req.nodeIdPrefix.length > GATEWAY_LIMITS.maxNodeIdBytes) v.add("node_id_prefix", "INVALID_LENGTH", `at most ${GATEWAY_LIMITS.maxNodeIdBytes} bytes`);
      if (req.includeSnapshots && req.fromVersion !== 0n) v.add("include_snapshots", "INVALID_ARGUMENT", "snapshots start a subscription from now: set from_version 0 with include_snapshots, or resume with from_version alone");
      if (v.list.length > 0) return failed(invalidArgument(v.list));
      const events = docs.watch({ ids: req.nodeIds, prefix: req.nodeIdPrefix }, req.fromVersion, req.includeSnapshots, ctx.signal);
      // Live changes are pushed (one write reaching ten thousand subscribers is one fan-out); a replay is pulled.
      return isPushIterable(events) ? mapPush(events, docEvent) : mapped(events);
    },

    collaborativeSession(messages, ctx) {
      return sessions.serve(messages, ctx.signal, authorOf(ctx));
    },

    async listNodes(req) {
      const page = parsePageRequest({ pageSize: req.pageSize === 0 ? GATEWAY_LIMITS.pageSizeDefault : req.pageSize, pageToken: req.pageToken, orderBy: req.orderBy }, ["node_id", "updated_at"] as const, Buffer.from(req.nodeIdPrefix).toString("hex"));
      const after = page.after ? { updatedMs: typeof page.after.key === "number" ? page.after.key : 0, nodeId: tokenId(page.after.id) } : undefined;
      const { nodes, total } = await docs.listNodes({ prefix: req.nodeIdPrefix, order: page.order.field, desc: page.order.desc, after, limit: page.size + 1, count: page.knownTotal === undefined });
      const shown = nodes.slice(0, page.size);
      const last = shown[shown.length - 1];
      const totalCount = page.knownTotal ?? total;
      return {
        nodes: shown.map((n) =>
          create(NodeInfoSchema, { nodeId: n.nodeId, version: n.version, vectorClock: wireClock(n.clock), sizeBytes: BigInt(n.sizeBytes), metadata: { ...n.metadata }, createdAt: timestampFromMs(n.createdMs), updatedAt: timestampFromMs(n.updatedMs) }),
        ),
        nextPageToken: nodes.length > page.size && last ? encodePageToken(page.order, Buffer.from(req.nodeIdPrefix).toString("hex"), { key: page.order.field === "updated_at" ? last.updatedMs : Buffer.from(last.nodeId).toString("hex"), id: Buffer.from(last.nodeId).toString("hex") }, totalCount) : "",
        totalCount,
      };
    },

    async listVersions(req) {
      const v = new Violations();
      validateNodeId(v, "node_id", req.nodeId);
      throwIfViolations(v.list);
      const fingerprint = Buffer.from(req.nodeId).toString("hex");
      const page = parsePageRequest({ pageSize: req.pageSize === 0 ? GATEWAY_LIMITS.pageSizeDefault : req.pageSize, pageToken: req.pageToken, orderBy: req.orderBy.trim() === "" ? "version desc" : req.orderBy }, ["version"] as const, fingerprint);
      const after = page.after ? BigInt(page.after.id) : undefined;
      const { changes, total } = await docs.listVersions(req.nodeId, page.order.desc, after, page.size + 1);
      const shown = changes.slice(0, page.size);
      const last = shown[shown.length - 1];
      return {
        versions: shown.map((c) =>
          create(VersionInfoSchema, {
            version: c.version,
            type: c.type === "DELETED" ? ChangeType.DELETED : ChangeType.DIFF,
            vectorClock: wireClock(c.clock),
            metadata: { ...c.metadata },
            committedAt: timestampFromMs(c.committedMs),
            diffSizeBytes: BigInt(c.diffSize ?? c.diff.length),
            author: c.author,
            writerId: c.writerId,
          }),
        ),
        nextPageToken: changes.length > page.size && last ? encodePageToken(page.order, fingerprint, { key: last.version.toString(), id: last.version.toString() }, total) : "",
        totalCount: total,
      };
    },

    async deleteNode(req, ctx) {
      const v = new Violations();
      validateNodeId(v, "node_id", req.nodeId);
      validateMetadata(v, "metadata", req.metadata);
      throwIfViolations(v.list);
      await docs.delete(req.nodeId, req.expectedVersion, req.metadata, authorOf(ctx));
      return {};
    },
  });
}
