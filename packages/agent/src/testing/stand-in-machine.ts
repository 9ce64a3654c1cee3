import { closeSync, openSync, readSync } from "node:fs";

/** What a stand-in state machine answers to one spec-valid request. */
export interface StandInReply {
  readonly status: number;
  /** The JSON body; undefined for an empty body. */
  readonly body?: unknown;
  /**
   * Set on a refusal (wrong state, inconsistent input): the stand-in records it as a
   * violation, because a correct backend never asks a VMM for something it must refuse.
   */
  readonly problem?: string;
}

/** What a state machine may do besides answering. */
export interface StandInEffects {
  /** Writes a line of "guest console" output where the VMM was told to send it. */
  console(line: string): void;
  /** Ends the VMM process soon with `code`, as the real VMM does when the guest powers off. */
  exitSoon(code: number): void;
}

/** The VM state machine of one stand-in flavor, fed only requests that match the spec. */
export interface StandInMachine {
  handle(method: string, template: string, params: Readonly<Record<string, string>>, body: unknown): StandInReply;
  /** Whether the guest runs now (and so writes console output). */
  guestRunning(): boolean;
  /** How a refusal is answered: Firecracker sends a fault message, Cloud Hypervisor only a status. */
  refusal(status: number, problem: string): StandInReply;
}

/**
 * Opens the host files a VM config names, as the real VMM does when it boots (the kernel,
 * the initrd, each disk), and describes each by its first bytes, so a test can tell from
 * the console which file the VMM really got. A file that cannot be opened is the refusal's
 * problem: a correct backend never hands a VMM a file it cannot open.
 */
export function openBootFiles(files: readonly { what: string; path: unknown }[]): { lines: string[]; problem?: string } {
  const lines: string[] = [];
  for (const { what, path } of files) {
    if (typeof path !== "string" || path === "") continue;
    try {
      const fd = openSync(path, "r");
      try {
        const head = Buffer.alloc(32);
        const n = readSync(fd, head, 0, head.length, 0);
        lines.push(`${what} begins ${JSON.stringify(head.subarray(0, n).toString("latin1"))}`);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      return { lines, problem: `cannot open the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
    }
  }
  return { lines };
}
