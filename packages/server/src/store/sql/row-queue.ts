/**
 * Runs calls one at a time per key (a row's id), in the order they arrive; different keys
 * run independently. The SQL store puts each update and delete of a row through it, so
 * that writers of one hot row in this process wait here, holding no database connection
 * and no lock, instead of racing each other in the database: there each would take the
 * revision lock only to lose the row to another, and the losers would fill the pool that
 * every other read and write needs.
 */
export class RowQueue {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` after every call queued before it on `key` has settled. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key);
    const result = previous ? previous.then(fn) : fn();
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /** Keys with calls running or waiting (for tests: nothing is left behind). */
  get size(): number {
    return this.tails.size;
  }
}
