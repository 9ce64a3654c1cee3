/**
 * A bounded ring buffer of one VM's console bytes, with followers. Backend-neutral: every
 * backend appends what its console device writes, and serves consoleTail, consolePosition
 * and followConsole (and so vmm.v1 GetConsoleOutput/StreamConsole offsets) from here.
 *
 * Positions are offsets in the VM's console output since the ring was created, so a
 * reader can continue without a gap, and a jump tells it that output was dropped.
 */

import type { ConsoleChunk } from "./backend.js";

/** The result of {@link ConsoleRing.read}: the bytes plus whether older output was dropped. */
export interface ConsoleRead extends ConsoleChunk {
  /** Whether output older than `offset` existed and no longer fits the buffer. */
  readonly truncated: boolean;
}

/** 1 MiB: what vmm.v1 promises for CONSOLE_OUTPUT_BUFFER. */
export const DEFAULT_CONSOLE_BUFFER_BYTES = 1024 * 1024;

/** Bounded console buffer; the oldest bytes are dropped once `capacity` is reached. */
export class ConsoleRing {
  private readonly buf: Uint8Array;
  /** Total bytes ever appended: the offset one past the newest byte. */
  private written = 0;
  private closed = false;
  /** Followers waiting for new bytes; each is woken once and re-registers. */
  private waiters = new Set<() => void>();

  constructor(readonly capacity: number = DEFAULT_CONSOLE_BUFFER_BYTES) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError(`console buffer capacity must be a positive integer, got ${capacity}`);
    this.buf = new Uint8Array(capacity);
  }

  /** The offset one past the newest byte (total bytes ever written). */
  get endOffset(): number {
    return this.written;
  }

  /** The offset of the oldest byte still buffered. */
  get startOffset(): number {
    return Math.max(0, this.written - this.capacity);
  }

  /** Where the buffered output lies: the shape of Backend.consolePosition. */
  position(): { start: number; end: number } {
    return { start: this.startOffset, end: this.written };
  }

  /** Whether {@link close} was called: followers have ended and appends are ignored. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Adds bytes as the guest wrote them and wakes every follower. */
  append(bytes: Uint8Array): void {
    if (this.closed || bytes.length === 0) return;
    // Only the last `capacity` bytes of a huge write can survive anyway.
    const src = bytes.length > this.capacity ? bytes.subarray(bytes.length - this.capacity) : bytes;
    const skipped = bytes.length - src.length;
    const pos = (this.written + skipped) % this.capacity;
    const first = Math.min(src.length, this.capacity - pos);
    this.buf.set(src.subarray(0, first), pos);
    if (first < src.length) this.buf.set(src.subarray(first), 0);
    this.written += bytes.length;
    this.wake();
  }

  /** The newest `n` bytes (fewer when less is buffered), as a copy. */
  tail(n: number): Uint8Array {
    return this.read(n).data;
  }

  /** The newest `n` bytes with their offset, and whether older output was dropped. */
  read(n: number): ConsoleRead {
    const count = Math.max(0, Math.min(Math.floor(n), this.written - this.startOffset));
    const offset = this.written - count;
    return { data: this.copy(offset, this.written), offset, truncated: offset > 0 };
  }

  /** Bytes from `offset` to the end; starts at the oldest buffered byte if `offset` was dropped. */
  readFrom(offset: number): ConsoleChunk {
    const from = Math.min(Math.max(offset, this.startOffset), this.written);
    return { data: this.copy(from, this.written), offset: from };
  }

  /**
   * Output from `fromOffset` (default: now) until `signal` aborts or the ring is closed:
   * the shape of Backend.followConsole. A follower that falls more than `capacity` behind
   * skips to the oldest buffered byte: the chunk's offset then jumps, and nothing else is
   * queued per follower, so a slow reader costs no memory.
   */
  async *follow(signal: AbortSignal, fromOffset?: number): AsyncGenerator<ConsoleChunk> {
    let next = fromOffset ?? this.written;
    while (!signal.aborted) {
      if (next < this.written) {
        const chunk = this.readFrom(next);
        next = chunk.offset + chunk.data.length;
        yield chunk;
        continue;
      }
      if (this.closed) return;
      await this.waitForChange(signal);
    }
  }

  /** Ends every follower (the VM was deleted); the buffered bytes stay readable. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const w of waiters) w();
  }

  private waitForChange(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        signal.removeEventListener("abort", done);
        this.waiters.delete(done);
        resolve();
      };
      signal.addEventListener("abort", done, { once: true });
      this.waiters.add(done);
    });
  }

  private copy(from: number, to: number): Uint8Array {
    const out = new Uint8Array(to - from);
    if (out.length === 0) return out;
    const start = from % this.capacity;
    const first = Math.min(out.length, this.capacity - start);
    out.set(this.buf.subarray(start, start + first), 0);
    if (first < out.length) out.set(this.buf.subarray(0, out.length - first), first);
    return out;
  }
}
