/**
 * Serialises async work per key (a volume, a pool): callers on one key run one after
 * another in arrival order; different keys run concurrently. In-process only: the agent
 * holds its state directory's lock, so it is the one process writing its pools.
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `fn` holding every key of `keys` (taken in sorted order, so two callers never deadlock). */
  async with<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(keys);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Takes every key of `keys` (in sorted order); the returned function releases them all. For work that cannot be one callback, e.g. a generator. */
  async acquire(keys: readonly string[]): Promise<() => void> {
    const releases: (() => void)[] = [];
    for (const key of [...new Set(keys)].sort()) releases.push(await this.#acquire(key));
    return () => {
      for (const release of releases.reverse()) release();
    };
  }

  /** Whether a key starting with `prefix` is held or waited on. */
  holds(prefix: string): boolean {
    for (const k of this.#tails.keys()) if (k.startsWith(prefix)) return true;
    return false;
  }

  /** How many keys are held or waited on (for tests: 0 once all work is done). */
  get size(): number {
    return this.#tails.size;
  }

  async #acquire(key: string): Promise<() => void> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.#tails.set(key, tail);
    await previous;
    return () => {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    };
  }
}
