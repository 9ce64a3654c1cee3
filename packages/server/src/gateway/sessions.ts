import { createHash, randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  ConflictPolicy,
  CursorSchema,
  ParticipantSchema,
  type Cursor,
  type SessionMessage,
  type SessionUpdate,
  type JoinSession,
  type SessionEdit,
} from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { CONTROL_CHARS, PushIterable, QuantixError, throwIfViolations, Violations, type PushSink } from "@quantix/core";
import { clockFromWire, validateClock, validateWriterId } from "./clock.js";
import { parseDiff } from "./diff.js";
import type { DocStore } from "./doc-store.js";
import { changeEvent, OUTCOME, validateMetadata, validateNodeId, wireClock, wireConflicts } from "./wire.js";
import type { CursorPos, PresenceBus, PresenceRecord } from "./presence.js";

/** Limits of a session (docs/api/memory-gateway.md). */
export const SESSION_LIMITS = {
  maxDisplayNameChars: 255,
  maxJoinMetadataEntries: 16,
  maxJoinMetadataKeyChars: 64,
  maxJoinMetadataValueChars: 255,
  maxEditIdChars: 128,
  maxLeaveReasonChars: 255,
  /** Cursor moves relayed per participant per second; the latest of a burst always goes out. */
  cursorMovesPerSec: 30,
  /** Updates a participant may leave unread before its stream ends (RESOURCE_EXHAUSTED). */
  maxBacklog: 10_000,
} as const;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const errorCodeName = (err: unknown) => (err instanceof QuantixError ? err.code.toUpperCase() : "INTERNAL");
const reasonOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** The session's id: one per node. */
export function sessionId(nodeId: Uint8Array): string {
  return `dom-${createHash("sha256").update(nodeId).digest("hex").slice(0, 24)}`;
}

function participant(r: PresenceRecord) {
  return create(ParticipantSchema, {
    participantId: r.participantId,
    displayName: r.displayName,
    metadata: { ...r.metadata },
    joinedAt: timestampFromMs(r.joinedMs),
    ...(r.cursor ? { cursor: create(CursorSchema, r.cursor) } : {}),
  });
}

function checkJoin(j: JoinSession): void {
  const v = new Violations();
  validateNodeId(v, "join.node_id", j.nodeId);
  validateWriterId(v, "join.participant_id", j.participantId, true);
  if (j.displayName.length > SESSION_LIMITS.maxDisplayNameChars || CONTROL_CHARS.test(j.displayName)) v.add("join.display_name", "INVALID_FORMAT", `at most ${SESSION_LIMITS.maxDisplayNameChars} characters, no control characters`);
  const keys = Object.keys(j.metadata);
  if (keys.length > SESSION_LIMITS.maxJoinMetadataEntries) v.add("join.metadata", "OUT_OF_RANGE", `at most ${SESSION_LIMITS.maxJoinMetadataEntries} entries, got ${keys.length}`);
  for (const k of keys) {
    if (k.length === 0 || k.length > SESSION_LIMITS.maxJoinMetadataKeyChars || j.metadata[k]!.length > SESSION_LIMITS.maxJoinMetadataValueChars) {
      v.add(`join.metadata[${JSON.stringify(k.slice(0, 80))}]`, "INVALID_LENGTH", `keys are 1-${SESSION_LIMITS.maxJoinMetadataKeyChars} characters, values at most ${SESSION_LIMITS.maxJoinMetadataValueChars}`);
    }
  }
  throwIfViolations(v.list);
}

function checkEdit(e: SessionEdit, participantId: string): void {
  const v = new Violations();
  if (e.editId.length > SESSION_LIMITS.maxEditIdChars) v.add("edit.edit_id", "INVALID_LENGTH", `at most ${SESSION_LIMITS.maxEditIdChars} characters`);
  validateClock(v, "edit.vector_clock", e.vectorClock, participantId);
  validateMetadata(v, "edit.metadata", e.metadata);
  v.enumValue("edit.on_conflict", e.onConflict, [ConflictPolicy.LAST_WRITER_WINS, ConflictPolicy.REJECT]);
  throwIfViolations(v.list);
}

/**
 * CollaborativeSession: one session per node, its participants possibly on several
 * replicas (presence through the PresenceBus, changes through the document store's
 * watch, so every participant gets every change in the one version order). An edit is a
 * WriteDiff by the participant (its id is its writer id); its acknowledgement follows the
 * change it made on the participant's own stream.
 */
export class SessionHub {
  constructor(
    private readonly docs: DocStore,
    private readonly presence: PresenceBus,
    private readonly now: () => number = Date.now,
  ) {}

  serve(messages: AsyncIterable<SessionMessage>, signal: AbortSignal, author: string): AsyncIterable<SessionUpdate> {
    return new PushIterable<SessionUpdate>((sink) => {
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      void this.run(messages, sink, stop.signal, author).then(
        () => sink.end(),
        (err: unknown) => sink.fail(err),
      );
      return () => {
        signal.removeEventListener("abort", onAbort);
        stop.abort();
      };
    }, SESSION_LIMITS.maxBacklog);
  }

  private async run(messages: AsyncIterable<SessionMessage>, sink: PushSink<SessionUpdate>, signal: AbortSignal, author: string): Promise<void> {
    const input = messages[Symbol.asyncIterator]();
    const first = await input.next();
    if (first.done) return;
    if (first.value.message.case !== "join") {
      throw new QuantixError("failed_precondition", `the first message of a session must be join, got ${first.value.message.case ?? "an empty message"}: send join { node_id, participant_id } first`);
    }
    const join = first.value.message.value;
    checkJoin(join);
    const nodeHex = hex(join.nodeId);
    const connectionId = randomUUID();
    const me = join.participantId;
    let cursorTimer: NodeJS.Timeout | undefined;
    let pendingCursor: CursorPos | undefined;
    let lastCursorMs = 0;
    let leftWith = "disconnected";
    const watchStop = new AbortController();
    const ended = new Promise<void>((resolve) => {
      signal.addEventListener("abort", () => resolve(), { once: true });
      watchStop.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    // Acknowledgements wait for their change on this stream: a participant sees its edit's
    // change, then the ack, like everyone else's changes.
    let delivered = 0n;
    const acks: { version: bigint; update: SessionUpdate }[] = [];
    const flushAcks = () => {
      const ready = acks.filter((a) => a.version <= delivered);
      if (ready.length === 0) return;
      acks.splice(0, acks.length, ...acks.filter((a) => a.version > delivered));
      sink.push(ready.map((a) => a.update));
    };

    // Others' arrivals, departures and cursors, from every replica.
    const unsubscribe = this.presence.subscribe(nodeHex, (e) => {
      if (e.kind === "joined") {
        if (e.record.participantId === me) {
          // The same participant joined again elsewhere: that stream replaces this one.
          if (e.record.connectionId !== connectionId) {
            leftWith = "";
            watchStop.abort();
          }
          return;
        }
        sink.push([{ update: { case: "participantJoined", value: participant(e.record) } } as SessionUpdate]);
      } else if (e.participantId !== me) {
        if (e.kind === "left") sink.push([{ update: { case: "participantLeft", value: { participantId: e.participantId, reason: e.reason } } } as SessionUpdate]);
        else sink.push([{ update: { case: "cursorMoved", value: { participantId: e.participantId, cursor: create(CursorSchema, e.cursor) } } } as SessionUpdate]);
      }
    });
    try {
      const others = await this.presence.join({ nodeHex, participantId: me, connectionId, displayName: join.displayName, metadata: join.metadata, cursor: undefined, joinedMs: this.now() });
      const joined = await this.startWatch(join, sink, watchStop.signal, (version) => {
        delivered = version;
        flushAcks();
      });
      sink.push([{ update: { case: "joined", value: { sessionId: sessionId(join.nodeId), version: joined.version, snapshotBson: joined.snapshot, vectorClock: joined.clock, participants: others.map(participant) } } } as SessionUpdate]);
      joined.go();

      const relayCursor = (c: CursorPos) => {
        const gap = 1000 / SESSION_LIMITS.cursorMovesPerSec;
        const wait = lastCursorMs + gap - this.now();
        if (wait <= 0) {
          lastCursorMs = this.now();
          void this.presence.cursor(nodeHex, me, connectionId, c).catch(() => undefined);
          return;
        }
        pendingCursor = c;
        cursorTimer ??= setTimeout(() => {
          cursorTimer = undefined;
          if (pendingCursor) relayCursor(pendingCursor);
          pendingCursor = undefined;
        }, wait);
      };

      const reading = (async () => {
        for (;;) {
          const next = await Promise.race([input.next(), ended.then(() => undefined)]);
          if (!next) return;
          if (next.done) {
            // The client closed its side: a graceful end.
            leftWith = "closed";
            return;
          }
          const m = next.value.message;
          switch (m.case) {
            case "join":
              throw new QuantixError("failed_precondition", "join is the first message only: this stream has joined already (to switch nodes, open another stream)");
            case "edit":
              await this.edit(m.value, join.nodeId, me, author, (version, update) => {
                acks.push({ version, update });
                flushAcks();
              });
              break;
            case "cursor":
              relayCursor(cursorOf(m.value));
              break;
            case "leave":
              if (m.value.reason.length > SESSION_LIMITS.maxLeaveReasonChars) throw new QuantixError("invalid_argument", `leave.reason: at most ${SESSION_LIMITS.maxLeaveReasonChars} characters`, [{ field: "leave.reason", reason: "INVALID_LENGTH", description: `at most ${SESSION_LIMITS.maxLeaveReasonChars} characters` }]);
              leftWith = m.value.reason || "left";
              return;
            default:
              throw new QuantixError("invalid_argument", "a session message sets one of join, edit, cursor or leave", [{ field: "message", reason: "REQUIRED", description: "set one of join, edit, cursor, leave" }]);
          }
        }
      })();
      await Promise.race([reading, joined.failed]);
      // Acks still waiting for their change go out once it is delivered, briefly.
      const deadline = this.now() + 2000;
      while (acks.length > 0 && this.now() < deadline && !signal.aborted) await new Promise((r) => setTimeout(r, 10));
    } finally {
      clearTimeout(cursorTimer);
      unsubscribe();
      watchStop.abort();
      if (leftWith !== "") await this.presence.leave(nodeHex, me, connectionId, leftWith).catch(() => undefined);
    }
  }

  /** Starts the node's change stream; resolves with what `joined` carries once the stream is synced. */
  private async startWatch(join: JoinSession, sink: PushSink<SessionUpdate>, signal: AbortSignal, onDelivered: (version: bigint) => void) {
    const events = this.docs.watch({ ids: [join.nodeId], prefix: new Uint8Array(0) }, join.fromVersion, join.fromVersion === 0n, signal);
    const it = events[Symbol.asyncIterator]();
    let version = join.fromVersion;
    let snapshot = new Uint8Array(0);
    let clock = wireClock(new Map());
    const held: SessionUpdate[] = [];
    // Until SYNCED: the snapshot (joining fresh) or the missed changes (rejoining).
    for (;;) {
      const r = await it.next();
      if (r.done) throw new QuantixError("unavailable", "the session's change stream ended before it was synced; join again");
      const e = r.value;
      if (e.type === "SYNCED") {
        if (join.fromVersion === 0n && snapshot.length === 0) version = e.version;
        break;
      }
      if (e.type === "SNAPSHOT") {
        snapshot = e.node.document as Uint8Array<ArrayBuffer>;
        version = e.node.version;
        clock = wireClock(e.node.clock);
      } else {
        held.push({ update: { case: "change", value: changeEvent(e.change) } } as SessionUpdate);
        version = e.change.version;
        clock = wireClock(e.change.clock);
      }
    }
    if (join.fromVersion !== 0n && held.length === 0) {
      const node = await this.docs.engine.node(join.nodeId);
      if (node) clock = wireClock(node.clock);
    }
    let failedWith: (err: unknown) => void = () => undefined;
    const failed = new Promise<void>((_, reject) => (failedWith = reject));
    failed.catch(() => undefined);
    return {
      version: join.fromVersion !== 0n ? join.fromVersion : version,
      snapshot,
      clock,
      failed,
      go: () => {
        if (held.length > 0) sink.push(held);
        onDelivered(version);
        void (async () => {
          try {
            for (;;) {
              const r = await it.next();
              if (r.done) return;
              const e = r.value;
              if (e.type === "CHANGE") {
                sink.push([{ update: { case: "change", value: changeEvent(e.change) } } as SessionUpdate]);
                onDelivered(e.change.version);
              } else if (e.type === "SYNCED") {
                onDelivered(e.version);
              }
            }
          } catch (err) {
            if (!signal.aborted) failedWith(err);
          }
        })();
      },
    };
  }

  private async edit(e: SessionEdit, nodeId: Uint8Array, me: string, author: string, ack: (version: bigint, update: SessionUpdate) => void): Promise<void> {
    const reject = (err: unknown) =>
      ack(0n, {
        update: {
          case: "editAck",
          value: { editId: e.editId, accepted: false, version: 0n, rejectionReason: reasonOf(err), rejectionCode: errorCodeName(err), concurrentVersions: [], conflicts: [] },
        },
      } as unknown as SessionUpdate);
    try {
      checkEdit(e, me);
      const diff = parseDiff(e.diffBson, "edit.diff_bson");
      const r = await this.docs.write({ nodeId, diff, diffBytes: e.diffBson, clock: clockFromWire(e.vectorClock!.entries), writerId: me, metadata: e.metadata, author, rejectConflicts: e.onConflict === ConflictPolicy.REJECT });
      ack(r.version, {
        update: {
          case: "editAck",
          value: { editId: e.editId, accepted: true, version: r.version, rejectionReason: "", rejectionCode: "", outcome: OUTCOME[r.outcome], concurrentVersions: [...r.concurrentVersions], conflicts: wireConflicts(r.conflicts) },
        },
      } as unknown as SessionUpdate);
    } catch (err) {
      if (!(err instanceof QuantixError) || err.code === "internal" || err.code === "unavailable") {
        if (!(err instanceof QuantixError)) throw err;
      }
      reject(err);
    }
  }
}

function cursorOf(c: Cursor): CursorPos {
  return { path: c.path.slice(0, 1024), anchorOffset: c.anchorOffset, headOffset: c.headOffset };
}

