import { QuantixError, type Clock, type MigrationProgress } from "@quantix/core";

/** How progress reaches the store: one conditional write of the Migrating condition's message. */
export type ProgressWrite = (message: string) => Promise<void>;

/** Progress is written at most this often (each write reaches every watcher). */
export const PROGRESS_EVERY_MS = 500;
/** Without progress, the last message is written again this often, so the migration's lease (30 s) stays fresh. */
export const TOUCH_EVERY_MS = 10_000;

/**
 * The progress writes of one running migration, one at a time and in order: at most every
 * PROGRESS_EVERY_MS, at least every TOUCH_EVERY_MS (the lease that keeps the leader's
 * reconciler off the VM). `settle` stops them and waits for the last, so no late write
 * lands after the migration's final one. A write that finds the VM deleted calls `onGone`
 * (the caller cancels the migration); other write errors are left to the next write.
 */
export class MigrationProgressWriter {
  private chain: Promise<void> = Promise.resolve();
  private last = 0;
  private message: string;
  private readonly timer: NodeJS.Timeout;
  private settled = false;

  constructor(
    private readonly clock: Clock,
    private readonly write: ProgressWrite,
    private readonly onGone: () => void,
    first: string,
    touchEveryMs = TOUCH_EVERY_MS,
  ) {
    this.message = first;
    this.timer = setInterval(() => this.enqueue(), touchEveryMs);
    this.timer.unref();
  }

  /** A progress report from the hypervisor; written unless one was written less than PROGRESS_EVERY_MS ago. */
  report(where: string, p: MigrationProgress): void {
    const mib = (b: bigint) => Number(b / 1048576n);
    const disks = p.diskTotalBytes !== undefined ? `, ${mib(p.diskTransferredBytes ?? 0n)} of ${mib(p.diskTotalBytes)} MiB of disk copied` : "";
    this.message = `migrating ${where}: ${p.status}, ${mib(p.transferredBytes)} of ${mib(p.totalBytes)} MiB sent${disks}`;
    if (this.clock.now() - this.last < PROGRESS_EVERY_MS) return;
    this.enqueue();
  }

  /** Stops writing and resolves once the last write has landed. */
  async settle(): Promise<void> {
    this.settled = true;
    clearInterval(this.timer);
    await this.chain;
  }

  private enqueue(): void {
    if (this.settled) return;
    this.last = this.clock.now();
    const message = this.message;
    this.chain = this.chain.then(async () => {
      if (this.settled) return;
      try {
        await this.write(message);
      } catch (err) {
        if (err instanceof QuantixError && err.code === "not_found") this.onGone();
      }
    });
  }
}
