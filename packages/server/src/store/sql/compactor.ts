import type { SqlDriver } from "./sql-driver.js";
import { big } from "./sql-driver.js";

/**
 * Keeps the change history to a bounded number of revisions (the retention): once the
 * history is a sixteenth over it, the oldest changes are deleted and
 * quantix_meta.compacted_revision says where history now begins, so that a watcher asking
 * for an older revision gets OUT_OF_RANGE rather than a silent gap. Any replica may
 * compact; compacting twice is harmless.
 */
export class Compactor {
  private writes = 0;

  constructor(
    private readonly db: SqlDriver,
    /** Revisions of history kept. */
    readonly retention: number,
  ) {}

  /** Called after each commit of `writes` writes; compacts every retention/16 writes. */
  async afterWrite(writes = 1): Promise<void> {
    this.writes += writes;
    if (this.writes < Math.max(1, this.retention >> 4)) return;
    this.writes = 0;
    await this.compact();
  }

  /** Compacts now; returns the revision history begins after. */
  async compact(): Promise<bigint> {
    // Moving the mark commits first, so readers (who check the mark in the same snapshot as
    // their rows) never read a range that is being deleted.
    const { rows } = await this.db.query<{ compacted_revision: unknown }>(
      `UPDATE quantix_meta SET compacted_revision = GREATEST(compacted_revision, revision - $1)
       WHERE id = 1 RETURNING compacted_revision`,
      [this.retention],
    );
    const mark = big(rows[0]?.compacted_revision ?? 0);
    await this.db.query("DELETE FROM quantix_changes WHERE revision <= $1", [mark]);
    return mark;
  }
}
