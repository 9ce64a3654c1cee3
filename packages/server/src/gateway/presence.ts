import type { SqlDriver } from "../store/sql/sql-driver.js";
import { big } from "../store/sql/sql-driver.js";

/** A participant's cursor. */
export interface CursorPos {
  readonly path: string;
  readonly anchorOffset: number;
  readonly headOffset: number;
}

/** A participant present in a session, on some replica's connection. */
export interface PresenceRecord {
  readonly nodeHex: string;
  readonly participantId: string;
  /** The stream it is on (a rejoin is a new connection that replaces the old). */
  readonly connectionId: string;
  readonly displayName: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly cursor: CursorPos | undefined;
  readonly joinedMs: number;
}

export type PresenceEvent =
  | { readonly kind: "joined"; readonly record: PresenceRecord }
  | { readonly kind: "left"; readonly participantId: string; readonly connectionId: string; readonly reason: string }
  | { readonly kind: "cursor"; readonly participantId: string; readonly connectionId: string; readonly cursor: CursorPos };

/**
 * Who is in each collaborative session, shared by every replica serving the store:
 * in process for memory and embedded stores (one replica), a table and NOTIFY on
 * PostgreSQL (several).
 */
export interface PresenceBus {
  /** Records the participant (replacing an older connection of the same id); returns everyone else present. */
  join(record: PresenceRecord): Promise<PresenceRecord[]>;
  leave(nodeHex: string, participantId: string, connectionId: string, reason: string): Promise<void>;
  cursor(nodeHex: string, participantId: string, connectionId: string, cursor: CursorPos): Promise<void>;
  /** Presence events of one node, from every replica (this one's included). */
  subscribe(nodeHex: string, fn: (e: PresenceEvent) => void): () => void;
  close(): Promise<void>;
}

/** The presence listeners of each node. */
class Listeners {
  private readonly byNode = new Map<string, Set<(e: PresenceEvent) => void>>();

  has(nodeHex: string): boolean {
    return this.byNode.has(nodeHex);
  }

  add(nodeHex: string, fn: (e: PresenceEvent) => void): () => void {
    const set = this.byNode.get(nodeHex) ?? new Set();
    this.byNode.set(nodeHex, set);
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.byNode.delete(nodeHex);
    };
  }

  emit(nodeHex: string, e: PresenceEvent): void {
    for (const fn of this.byNode.get(nodeHex) ?? []) fn(e);
  }
}

/** Presence in this process. */
export class LocalPresence implements PresenceBus {
  private readonly present = new Map<string, Map<string, PresenceRecord>>();
  private readonly listeners = new Listeners();

  async join(record: PresenceRecord): Promise<PresenceRecord[]> {
    const node = this.present.get(record.nodeHex) ?? new Map<string, PresenceRecord>();
    this.present.set(record.nodeHex, node);
    node.set(record.participantId, record);
    this.emit(record.nodeHex, { kind: "joined", record });
    return [...node.values()].filter((r) => r.participantId !== record.participantId);
  }

  async leave(nodeHex: string, participantId: string, connectionId: string, reason: string): Promise<void> {
    const node = this.present.get(nodeHex);
    if (node?.get(participantId)?.connectionId !== connectionId) return;
    node.delete(participantId);
    if (node.size === 0) this.present.delete(nodeHex);
    this.emit(nodeHex, { kind: "left", participantId, connectionId, reason });
  }

  async cursor(nodeHex: string, participantId: string, connectionId: string, cursor: CursorPos): Promise<void> {
    const r = this.present.get(nodeHex)?.get(participantId);
    if (r?.connectionId !== connectionId) return;
    this.present.get(nodeHex)!.set(participantId, { ...r, cursor });
    this.emit(nodeHex, { kind: "cursor", participantId, connectionId, cursor });
  }

  subscribe(nodeHex: string, fn: (e: PresenceEvent) => void): () => void {
    return this.listeners.add(nodeHex, fn);
  }

  private emit(nodeHex: string, e: PresenceEvent): void {
    this.listeners.emit(nodeHex, e);
  }

  async close(): Promise<void> {}
}

/** The channel presence changes are notified on. */
const PRESENCE_CHANNEL = "quantix_dom_presence";

type ParticipantRow = {
  node_id: Uint8Array;
  participant_id: string;
  connection_id: string;
  display_name: string;
  metadata: Record<string, string> | string;
  cursor: CursorPos | string | null;
  joined_ms: unknown;
};

const json = <T>(v: T | string): T => (typeof v === "string" ? (JSON.parse(v) as T) : v);

function toRecord(r: ParticipantRow): PresenceRecord {
  return {
    nodeHex: Buffer.from(r.node_id).toString("hex"),
    participantId: r.participant_id,
    connectionId: r.connection_id,
    displayName: r.display_name,
    metadata: json(r.metadata),
    cursor: r.cursor === null ? undefined : json<CursorPos>(r.cursor),
    joinedMs: Number(big(r.joined_ms)),
  };
}

/**
 * Presence in the database: a row per participant (quantix_dom_participants) and a
 * notification per change, so a participant on one replica sees those on another. Each
 * replica refreshes its participants' rows; a row not refreshed for `staleMs` (its
 * replica died) is dropped at the next join, as "disconnected".
 */
export class SqlPresence implements PresenceBus {
  private readonly listeners = new Listeners();
  private readonly mine = new Map<string, { nodeHex: string; participantId: string; connectionId: string }>();
  private unlisten: (() => Promise<void>) | undefined;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    private readonly db: SqlDriver,
    private readonly staleMs: number,
    private readonly onError: (err: unknown) => void,
  ) {
    this.timer = setInterval(() => void this.refresh(), Math.max(1000, staleMs / 3));
    this.timer.unref();
  }

  static async open(db: SqlDriver, options: { staleMs?: number; onError?: (err: unknown) => void } = {}): Promise<SqlPresence> {
    const bus = new SqlPresence(db, options.staleMs ?? 30_000, options.onError ?? (() => undefined));
    bus.unlisten = await db.listen(PRESENCE_CHANNEL, (payload) => void bus.received(payload).catch(bus.onError));
    return bus;
  }

  private async received(payload: string): Promise<void> {
    const m = JSON.parse(payload) as { n: string; p: string; c: string; k: "joined" | "left" | "cursor"; r?: string; cur?: CursorPos };
    if (!this.listeners.has(m.n)) return;
    if (m.k === "joined") {
      const { rows } = await this.db.query<ParticipantRow>("SELECT * FROM quantix_dom_participants WHERE node_id = $1 AND participant_id = $2 AND connection_id = $3", [Buffer.from(m.n, "hex"), m.p, m.c]);
      if (rows[0]) this.emit(m.n, { kind: "joined", record: toRecord(rows[0]) });
    } else if (m.k === "left") {
      this.emit(m.n, { kind: "left", participantId: m.p, connectionId: m.c, reason: m.r ?? "left" });
    } else if (m.cur) {
      this.emit(m.n, { kind: "cursor", participantId: m.p, connectionId: m.c, cursor: m.cur });
    }
  }

  private notify(body: Record<string, unknown>): Promise<unknown> {
    return this.db.query("SELECT pg_notify($1, $2)", [PRESENCE_CHANNEL, JSON.stringify(body)]);
  }

  async join(r: PresenceRecord): Promise<PresenceRecord[]> {
    const id = Buffer.from(r.nodeHex, "hex");
    const now = Date.now();
    // Participants whose replica stopped refreshing them are gone.
    const { rows: stale } = await this.db.query<ParticipantRow>("DELETE FROM quantix_dom_participants WHERE node_id = $1 AND seen_ms < $2 RETURNING *", [id, now - this.staleMs]);
    for (const s of stale) await this.notify({ n: r.nodeHex, p: s.participant_id, c: s.connection_id, k: "left", r: "disconnected" });
    await this.db.query(
      `INSERT INTO quantix_dom_participants (node_id, participant_id, connection_id, display_name, metadata, cursor, joined_ms, seen_ms) VALUES ($1, $2, $3, $4, $5::jsonb, NULL, $6, $6)
       ON CONFLICT (node_id, participant_id) DO UPDATE SET connection_id = EXCLUDED.connection_id, display_name = EXCLUDED.display_name, metadata = EXCLUDED.metadata, cursor = NULL, joined_ms = EXCLUDED.joined_ms, seen_ms = EXCLUDED.seen_ms`,
      [id, r.participantId, r.connectionId, r.displayName, JSON.stringify(r.metadata), r.joinedMs],
    );
    this.mine.set(`${r.nodeHex}/${r.participantId}`, { nodeHex: r.nodeHex, participantId: r.participantId, connectionId: r.connectionId });
    await this.notify({ n: r.nodeHex, p: r.participantId, c: r.connectionId, k: "joined" });
    const { rows } = await this.db.query<ParticipantRow>("SELECT * FROM quantix_dom_participants WHERE node_id = $1 AND participant_id <> $2 ORDER BY joined_ms", [id, r.participantId]);
    return rows.map(toRecord);
  }

  async leave(nodeHex: string, participantId: string, connectionId: string, reason: string): Promise<void> {
    const k = `${nodeHex}/${participantId}`;
    if (this.mine.get(k)?.connectionId === connectionId) this.mine.delete(k);
    const { rowCount } = await this.db.query("DELETE FROM quantix_dom_participants WHERE node_id = $1 AND participant_id = $2 AND connection_id = $3", [Buffer.from(nodeHex, "hex"), participantId, connectionId]);
    if (rowCount > 0) await this.notify({ n: nodeHex, p: participantId, c: connectionId, k: "left", r: reason.slice(0, 255) });
  }

  async cursor(nodeHex: string, participantId: string, connectionId: string, cursor: CursorPos): Promise<void> {
    await this.db.query("UPDATE quantix_dom_participants SET cursor = $4::jsonb WHERE node_id = $1 AND participant_id = $2 AND connection_id = $3", [Buffer.from(nodeHex, "hex"), participantId, connectionId, JSON.stringify(cursor)]);
    await this.notify({ n: nodeHex, p: participantId, c: connectionId, k: "cursor", cur: cursor });
  }

  private async refresh(): Promise<void> {
    try {
      for (const m of this.mine.values()) {
        await this.db.query("UPDATE quantix_dom_participants SET seen_ms = $4 WHERE node_id = $1 AND participant_id = $2 AND connection_id = $3", [Buffer.from(m.nodeHex, "hex"), m.participantId, m.connectionId, Date.now()]);
      }
    } catch (err) {
      this.onError(err);
    }
  }

  subscribe(nodeHex: string, fn: (e: PresenceEvent) => void): () => void {
    return this.listeners.add(nodeHex, fn);
  }

  private emit(nodeHex: string, e: PresenceEvent): void {
    this.listeners.emit(nodeHex, e);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.unlisten?.();
  }
}
