import { QuantixError, type ChangeType } from "@quantix/core";
import type { WatchHub } from "../watch-hub.js";
import { CoalescedRun } from "./coalesced-run.js";
import { big, type SqlDriver } from "./sql-driver.js";

/** The channel writes notify after commit; the payload is the new revision. */
export const CHANGES_CHANNEL = "quantix_changes";

/** Rows read per query when catching up. */
const BATCH = 1000;

/** A change this process committed, as stored (its object frozen, at its revision). */
export interface CommittedChange {
  readonly kind: string;
  readonly type: ChangeType;
  readonly object: unknown;
  readonly previous: unknown;
  readonly revision: bigint;
}

interface Sink {
  readonly hub: WatchHub<unknown>;
  /** Decodes stored bytes into the object at `version`. */
  readonly decode: (data: Uint8Array, version: bigint) => unknown;
  /** Told every change published, in order (undefined: forget everything told so far). */
  readonly seen?: ((type: ChangeType, object: unknown) => void) | undefined;
}

/**
 * Follows the change history table and publishes each change, in revision order, to the
 * watch hub of its kind. Woken by LISTEN/NOTIFY (a write on any replica notifies at commit)
 * and, as a safety net for a lost notification or LISTEN connection, by a periodic poll.
 * Because revisions commit in order (see migrations.ts), reading `revision > last` never
 * skips a change that commits later: no gaps, no duplicates.
 */
export class ChangeTailer {
  private last: bigint;
  private readonly sinks = new Map<string, Sink>();
  private timer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly reader: CoalescedRun;
  private listening = false;
  /** The newest revision this process is committing (expectOwn). */
  private own = 0n;
  /** Whether this process's group commit has a round under way (ownRound). */
  private writing = false;
  /** The newest revision notified during that round and not published then (0: none). */
  private heard = 0n;

  constructor(
    private readonly driver: SqlDriver,
    startRevision: bigint,
    private readonly pollMs: number,
    private readonly onError: (err: unknown) => void,
  ) {
    this.last = startRevision;
    this.reader = new CoalescedRun(async () => (await this.readBatch()) === BATCH, onError);
  }

  /** The newest revision published to the hubs. */
  get revision(): bigint {
    return this.last;
  }

  register(kind: string, hub: WatchHub<unknown>, decode: (data: Uint8Array, version: bigint) => unknown, seen?: Sink["seen"]): void {
    this.sinks.set(kind, { hub, decode, seen });
  }

  private publish(kind: string, type: ChangeType, object: unknown, previous: unknown, revision: bigint): void {
    const sink = this.sinks.get(kind);
    if (!sink) return;
    sink.hub.publish({ type, object, previous, revision });
    sink.seen?.(type, object);
  }

  /** What the sinks were told may not be followed in order any more (a gap, a restart): they forget it. */
  private forget(): void {
    for (const sink of this.sinks.values()) sink.seen?.("DELETED", undefined);
  }

  async start(): Promise<void> {
    await this.relisten();
    this.timer = setInterval(() => {
      if (!this.unlisten) void this.relisten();
      this.kick();
    }, this.pollMs);
    this.timer.unref();
  }

  /**
   * Changes this process has just committed, in revision order. When they follow the last
   * change published, they are published now, without reading them back (the writers are
   * answered after this, so a watcher sees a write no later than its writer does); when
   * another writer's changes may lie between, the history is read instead.
   */
  committed(all: readonly CommittedChange[]): void {
    // Those a read of the history (woken by their notification) published already are not published again.
    const changes = all[0] && all[0].revision <= this.last ? all.filter((c) => c.revision > this.last) : all;
    if (changes.length === 0) return;
    if (changes[0]!.revision !== this.last + 1n) {
      // Published once read, after the writers are answered: until then, what the sinks were told is stale.
      this.forget();
      void this.kick();
      return;
    }
    for (const c of changes) {
      this.publish(c.kind, c.type, c.object, c.previous, c.revision);
      this.last = c.revision;
    }
  }

  /**
   * This process is committing the changes up to `revision` (called inside the commit's
   * transaction, before COMMIT): their notification starts no read, since committed() will
   * publish them. Only for a database no other process writes (the embedded one): there a
   * revision this process did not commit cannot hide behind the one expected.
   */
  expectOwn(revision: bigint): void {
    if (revision > this.own) this.own = revision;
  }

  /**
   * This process's group commit starts a round (true) or has answered its callers (false).
   * On PostgreSQL the NOTIFY of a commit often arrives on the listening connection before
   * the commit's own result, when committed() has not yet published it: read then, it was
   * a read of the history (and a decode) per write for a change about to be published
   * anyway (a third of lone creates, measured). A notification heard during a round is
   * checked when the round ends instead: by then committed() has published this process's
   * changes, and a revision still unpublished (another replica's) is read. Another
   * replica's change waits at most for one round of this process; none is missed.
   */
  ownRound(started: boolean): void {
    this.writing = started;
    if (started || this.heard === 0n) return;
    const heard = this.heard;
    this.heard = 0n;
    if (heard > this.last) void this.kick();
  }

  /** A notification of `payload`: reads the history unless the change is (or is about to be) published here. */
  private notified(payload: string): void {
    const revision = /^\d+$/.test(payload) ? BigInt(payload) : undefined;
    // Our own commits are mostly published already (committed()): no read for those.
    if (revision !== undefined && revision <= (this.own > this.last ? this.own : this.last)) return;
    if (revision !== undefined && this.writing) {
      if (revision > this.heard) this.heard = revision;
      return;
    }
    void this.kick();
  }

  /** Reads new changes now (coalesced with a read already under way). */
  private kick(): Promise<void> {
    return this.reader.kick();
  }


  /**
   * Resolves once every change committed so far is published, so that a watch starting
   * now is SYNCED at the store's latest revision (a write acknowledged by any replica
   * before the watch began is in its replay). OUT_OF_RANGE when `from` is newer than the
   * store.
   */
  async syncFrom(from: bigint): Promise<void> {
    const { rows } = await this.driver.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1");
    const latest = big(rows[0]?.revision ?? 0);
    if (from > latest) throw new QuantixError("out_of_range", `watch: revision ${from} is newer than the store's latest revision ${latest}`);
    for (let i = 0; i < 3 && this.last < latest; i++) await this.kick();
    if (this.last < latest) throw new QuantixError("unavailable", `watch: could not read the change history up to revision ${latest}: ${String(this.reader.failure ?? "unknown error")}; retry`);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.reader.current;
    await this.unlisten?.();
    this.unlisten = undefined;
  }

  private async relisten(): Promise<void> {
    // A connect slower than the poll interval must not start a second LISTEN connection.
    if (this.listening) return;
    this.listening = true;
    try {
      const stop = await this.driver.listen(
        CHANGES_CHANNEL,
        (payload) => this.notified(payload),
        () => (this.unlisten = undefined),
      );
      this.unlisten = async () => {
        this.unlisten = undefined;
        await stop();
      };
      // Changes committed while not listening are read now.
      void this.kick();
    } catch (err) {
      this.onError(err);
    } finally {
      this.listening = false;
    }
  }

  private async readBatch(): Promise<number> {
    // One statement, one snapshot: the history's bounds and the rows after `last`. Changes
    // this process commits meanwhile may be published (committed()) before the rows arrive.
    const from = this.last;
    const { rows } = await this.driver.query<{
      compacted_revision: unknown;
      latest: unknown;
      revision: unknown;
      kind: string | null;
      type: string;
      data: Uint8Array;
      previous: Uint8Array | null;
      previous_version: unknown;
    }>(
      `SELECT m.compacted_revision, m.revision AS latest, c.revision, c.kind, c.type, c.data, c.previous, c.previous_version
       FROM quantix_meta m
       LEFT JOIN LATERAL (SELECT * FROM quantix_changes WHERE revision > $1 ORDER BY revision LIMIT $2) c ON true
       WHERE m.id = 1`,
      [from, BATCH],
    );
    const compacted = big(rows[0]?.compacted_revision ?? 0);
    const latest = big(rows[0]?.latest ?? 0);
    if (this.last < compacted) {
      // This replica fell behind by more than the retention (cut off from the database while
      // others wrote): the changes in between are gone. Watchers learn it; they do not get a gap.
      this.restart(compacted, `this replica's view of the history fell behind the retention (it had revision ${this.last}, history now starts after ${compacted})`);
    } else if (latest < from) {
      // The database went back (restored from a backup, or a failover lost commits).
      this.restart(latest, `the database's latest revision ${latest} is older than revision ${from} this replica had seen (restored or failed over?)`);
      return 0;
    }
    let read = 0;
    for (const row of rows) {
      if (row.kind === null || row.revision === null) continue;
      read++;
      const revision = big(row.revision);
      if (revision <= this.last) continue;
      const sink = this.sinks.get(row.kind);
      if (sink) this.publish(row.kind, row.type as ChangeType, sink.decode(row.data, revision), row.previous ? sink.decode(row.previous, big(row.previous_version)) : undefined, revision);
      this.last = revision;
    }
    return read;
  }

  /** Ends every watcher with OUT_OF_RANGE and continues from `revision`. */
  private restart(revision: bigint, why: string): void {
    const err = new QuantixError("out_of_range", `watch: ${why}; list again and watch from the list's resource_version`);
    for (const sink of this.sinks.values()) sink.hub.reset(revision, err);
    this.forget();
    this.last = revision;
    this.onError(err);
  }
}
