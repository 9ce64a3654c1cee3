import { readFile } from "node:fs/promises";
import { replacePrivateFile } from "./private-file.js";
import { join } from "node:path";

/**
 * When each VM was created (ms since the epoch), kept in the agent's state directory
 * (`created-at.json`), so ListVms' creation order and its page tokens survive an agent
 * restart. Without a directory (unit tests) the times live in memory only. Writes are
 * chained and atomic (temp file + rename): a crash leaves the old or the new map.
 */
export class CreatedAtStore {
  private readonly times = new Map<string, number>();
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly dir?: string) {}

  private get file(): string | undefined {
    return this.dir && join(this.dir, "created-at.json");
  }

  /** Reads the saved times; `ids` (the VMs the backend re-adopted) missing from them get `now`. */
  async load(ids: readonly string[], now: number): Promise<void> {
    const none: Record<string, unknown> = {};
    const saved = this.file ? await readFile(this.file, "utf8").then((t) => JSON.parse(t) as Record<string, unknown>).catch(() => none) : none; // unreadable: order by now
    for (const id of ids) {
      const t = saved[id];
      this.times.set(id, typeof t === "number" && Number.isFinite(t) ? t : now);
    }
    await this.save();
  }

  get(id: string): number | undefined {
    return this.times.get(id);
  }

  async set(id: string, ms: number): Promise<void> {
    this.times.set(id, ms);
    await this.save();
  }

  async delete(id: string): Promise<void> {
    if (this.times.delete(id)) await this.save();
  }

  private save(): Promise<void> {
    const file = this.file;
    if (!file) return Promise.resolve();
    const run = async () => {
      await replacePrivateFile(file, JSON.stringify(Object.fromEntries(this.times)), `${file}.${process.pid}.tmp`);
    };
    this.writes = this.writes.then(run, run);
    return this.writes;
  }
}
