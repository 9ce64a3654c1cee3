/**
 * Runs `step` until it reports nothing more to do; a kick while it runs asks for one more
 * round after it (so a notification that arrives mid-read is never lost), and concurrent
 * kicks share that round. The change tailers read their history this way.
 */
export class CoalescedRun {
  private running: Promise<void> | undefined;
  private again = false;
  /** Why the last round failed, until one succeeds. */
  failure: unknown;

  constructor(
    /** One step; resolves true while there is more to do at once (a full page was read). */
    private readonly step: () => Promise<boolean>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Runs now, or once more after the run under way; resolves when that run is done. */
  kick(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          while (await this.step());
        } while (this.again);
        this.failure = undefined;
      } catch (err) {
        this.failure = err;
        this.onError(err);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** The run under way, if any. */
  get current(): Promise<void> | undefined {
    return this.running;
  }
}
