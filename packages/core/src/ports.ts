/** Time, injected so that logic never calls Date.now() itself and tests can control it. */
export interface Clock {
  /** The current time in milliseconds since the Unix epoch. */
  now(): number;
}

/** Produces unique ids for new resources. */
export interface IdGenerator {
  /** A new random UUID. */
  newId(): string;
}

/** The wall clock. */
export const systemClock: Clock = { now: () => Date.now() };

/** Random v4 UUIDs from the platform's CSPRNG. */
export const randomIds: IdGenerator = { newId: () => globalThis.crypto.randomUUID() };

/** Timers, injected so that controllers can be driven by a fake clock in tests. */
export interface Timers {
  /** Calls `fn` once after `ms`; returns a cancel. Real timers never keep the process alive on their own. */
  setTimeout(fn: () => void, ms: number): () => void;
}

/** Node's timers, unref'd. */
export const systemTimers: Timers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};
