import { open, truncate } from "node:fs/promises";
import type { ConsoleRing } from "../../console-ring.js";

/**
 * Copies what a VMM appends to its serial output file into the VM's console ring. Polled,
 * because inotify misses writes on some file systems and the file may not exist yet when
 * tailing starts. Reads only from `fromByte` on, so a restarted agent does not duplicate.
 *
 * The file is only a pipe into the ring: once the tail has copied `maxBytes` of it, the
 * tail truncates it to zero, so a chatty guest cannot fill the disk. The VMM opened the
 * file with O_APPEND, so its next write lands at the new end (offset 0) and the tail,
 * back at position 0, goes on reading. What the VMM writes in the instant between the
 * last read and the truncation is lost; the ring, not the file, is the console's record.
 */

/** The default bound of a console file before the tail truncates it. */
export const CONSOLE_FILE_MAX_BYTES = 8 * 1024 * 1024;

export class ConsoleFileTail {
  private position: number;
  private readonly timer: NodeJS.Timeout;
  private busy = false;

  constructor(private readonly file: string, private readonly ring: ConsoleRing, fromByte = 0, pollMs = 100, private readonly maxBytes = CONSOLE_FILE_MAX_BYTES) {
    this.position = fromByte;
    this.timer = setInterval(() => void this.poll(), pollMs);
    this.timer.unref();
  }

  /** Reads what was appended since the last poll. */
  async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const fh = await open(this.file, "r").catch(() => undefined);
      if (!fh) return;
      try {
        const { size } = await fh.stat();
        if (size < this.position) this.position = 0;
        while (this.position < size) {
          const buf = Buffer.alloc(Math.min(64 * 1024, size - this.position));
          const { bytesRead } = await fh.read(buf, 0, buf.length, this.position);
          if (bytesRead === 0) break;
          this.position += bytesRead;
          this.ring.append(buf.subarray(0, bytesRead));
        }
      } finally {
        await fh.close();
      }
      if (this.position >= this.maxBytes) {
        await truncate(this.file, 0);
        this.position = 0;
      }
    } finally {
      this.busy = false;
    }
  }

  /** Stops polling, after copying what is already there. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.busy) await new Promise((r) => setTimeout(r, 5));
    await this.poll();
  }
}
