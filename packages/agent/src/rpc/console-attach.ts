import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { ConsoleEventSchema, ConsoleRoleKind, type ConsoleEvent, type ConsoleInput } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import type { ConsoleRoleEvent, ConsoleSession } from "../console-sessions.js";
import type { VmManager } from "../vm-manager.js";
import { consoleStart } from "./console-routes.js";

/** Largest input message (ConsoleInput.data), in bytes. */
export const MAX_CONSOLE_INPUT_BYTES = 4096;
/** Input is paced to this many bytes per second per session (a paste slows down, it does not fail). */
export const CONSOLE_INPUT_BYTES_PER_SEC = 64 * 1024;

const ROLE: Record<ConsoleRoleEvent["role"], ConsoleRoleKind> = {
  writer: ConsoleRoleKind.WRITER,
  viewer: ConsoleRoleKind.VIEWER,
  displaced: ConsoleRoleKind.DISPLACED,
};

/**
 * AttachConsole: the attach message, then output and role events out and input in, until
 * the VM is deleted, the client closes its side or cancels. The rules are
 * console-sessions.ts's; this is the stream plumbing.
 */
export async function* attachConsole(m: VmManager, input: AsyncIterable<ConsoleInput>, ctx: HandlerContext): AsyncGenerator<ConsoleEvent> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done || first.value.kind.case !== "attach") {
    throw new QuantixError("failed_precondition", "the first AttachConsole message must be attach (which VM, and whether to write); input comes after it");
  }
  const a = first.value.kind.value;
  if (a.force && !a.write) throw new QuantixError("invalid_argument", "attach.force: takes the writer role, so it needs attach.write", [{ field: "attach.force", reason: "NEEDS_WRITE", description: "force needs write" }]);
  const from = await consoleStart(m, a.vmId, a.tailBytes, a.fromOffset, "attach.");
  if (a.write) m.consoleInputReady();

  const out = new Channel<ConsoleEvent>();
  const ac = new AbortController();
  const stop = () => ac.abort();
  ctx.signal.addEventListener("abort", stop);
  const role = (e: ConsoleRoleEvent) => out.push(create(ConsoleEventSchema, { kind: { case: "role", value: { role: ROLE[e.role], writerPresent: e.writerPresent, message: e.message, droppedBytes: e.droppedBytes } } }));
  const session = m.consoleSessions.join(a.vmId, a.write, a.force, role);
  try {
    void (async () => {
      for await (const c of m.backend.followConsole(a.vmId, ac.signal, from)) {
        if (c.data.length > 0) await out.send(create(ConsoleEventSchema, { kind: { case: "output", value: { data: c.data, offset: BigInt(c.offset) } } }));
      }
    })().then(() => out.end(), (err: unknown) => out.fail(err));
    void readInput(m, session, it, ac.signal).then(() => out.end(), (err: unknown) => out.fail(err));
    yield* out;
  } finally {
    ctx.signal.removeEventListener("abort", stop);
    ac.abort();
    session.leave();
    out.close();
  }
}

/** Input messages to the backend (the writer's) or dropped with a notice (a viewer's), paced. */
async function readInput(m: VmManager, session: ConsoleSession, it: AsyncIterator<ConsoleInput>, signal: AbortSignal): Promise<void> {
  const pace = new Pacer(CONSOLE_INPUT_BYTES_PER_SEC);
  for (;;) {
    const r = await it.next();
    if (r.done || signal.aborted) return;
    const kind = r.value.kind;
    if (kind.case !== "data") {
      throw new QuantixError("invalid_argument", `data: after attach every AttachConsole message carries input; got ${kind.case ?? "an empty message"}`, [{ field: "data", reason: "REQUIRED", description: "input messages carry data" }]);
    }
    const data = kind.value;
    if (data.length === 0 || data.length > MAX_CONSOLE_INPUT_BYTES) {
      throw new QuantixError("invalid_argument", `data: must hold 1-${MAX_CONSOLE_INPUT_BYTES} bytes, got ${data.length}`, [{ field: "data", reason: "OUT_OF_RANGE", description: `1-${MAX_CONSOLE_INPUT_BYTES} bytes per message` }]);
    }
    if (!session.isWriter) {
      session.dropped(data.length);
      continue;
    }
    await pace.take(data.length, signal);
    await m.consoleWrite(session.vmId, data);
  }
}

/** A token bucket of one second's worth: waits (never fails) when input comes faster. */
class Pacer {
  private tokens: number;
  private at = performance.now();
  constructor(private readonly perSec: number) {
    this.tokens = perSec;
  }
  async take(n: number, signal: AbortSignal): Promise<void> {
    const now = performance.now();
    this.tokens = Math.min(this.perSec, this.tokens + ((now - this.at) / 1000) * this.perSec);
    this.at = now;
    this.tokens -= n;
    if (this.tokens >= 0 || signal.aborted) return;
    const waitMs = (-this.tokens / this.perSec) * 1000;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, waitMs);
      signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
    });
  }
}

/**
 * An async queue with one reader: `push` never waits (role events), `send` waits until the
 * reader took the item (output: a slow client holds the console follower back, which
 * then skips ahead in the ring rather than buffering here).
 */
class Channel<T> implements AsyncIterable<T> {
  private readonly items: { value: T; taken?: () => void }[] = [];
  private wake: (() => void) | undefined;
  private done = false;
  private error: { err: unknown } | undefined;

  push(value: T): void {
    if (this.done) return;
    this.items.push({ value });
    this.notify();
  }
  send(value: T): Promise<void> {
    if (this.done) return Promise.resolve();
    return new Promise((resolve) => {
      this.items.push({ value, taken: resolve });
      this.notify();
    });
  }
  /** No more items: the reader takes what is queued, then ends. */
  end(): void {
    this.done = true;
    this.notify();
  }
  /** The reader is gone: queued items are dropped and their senders released. */
  close(): void {
    this.done = true;
    for (const i of this.items.splice(0)) i.taken?.();
    this.notify();
  }
  fail(err: unknown): void {
    if (this.done) return;
    this.error = { err };
    this.end();
  }
  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      const item = this.items.shift();
      if (item) {
        item.taken?.();
        yield item.value;
        continue;
      }
      if (this.error) throw this.error.err;
      if (this.done) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}
