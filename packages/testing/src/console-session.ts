import { ConnectError } from "@connectrpc/connect";
import { until } from "./until.js";

/** A role event of vmm.v1 or compute.v1 AttachConsole (the two have the same shape). */
export interface ConsoleRoleLike {
  readonly role: number;
  readonly writerPresent: boolean;
  readonly message: string;
  readonly droppedBytes: number;
}

/** A server message of either AttachConsole. */
export interface ConsoleEventLike {
  readonly kind: { readonly case: "output"; readonly value: { readonly data: Uint8Array; readonly offset: bigint } } | { readonly case: "role"; readonly value: ConsoleRoleLike } | { readonly case: undefined; readonly value?: undefined };
}

/** A client message of either AttachConsole, as a plain init object. */
export type ConsoleInputInit =
  | { kind: { case: "attach"; value: { vmId: string; tailBytes?: number; fromOffset?: bigint; write?: boolean; force?: boolean } } }
  | { kind: { case: "data"; value: Uint8Array } };

/** One AttachConsole session driven by a test: what it received, and a way to type. */
export interface ConsoleTestSession {
  /** Every output byte received so far, decoded as UTF-8. */
  text(): string;
  /** Every role event received so far. */
  readonly roles: ConsoleRoleLike[];
  /** Sends a message as it is (the first must be attach unless a test checks otherwise). */
  sendRaw(msg: ConsoleInputInit): void;
  /** Sends input bytes. */
  type(data: string | Uint8Array): void;
  /** Waits until the output contains `text`. */
  waitText(text: string, timeoutMs?: number): Promise<void>;
  /** Waits for a role event `pred` accepts, among those after the first `after`. */
  waitRole(pred: (r: ConsoleRoleLike) => boolean, what: string, after?: number, timeoutMs?: number): Promise<ConsoleRoleLike>;
  /** Resolves with the error the stream ended with (undefined when it ended OK). */
  readonly ended: Promise<ConnectError | undefined>;
  /** Closes the input side and cancels. */
  close(): Promise<void>;
}

/**
 * Opens an AttachConsole session with `call` (a client's attachConsole, either API), the
 * first message being `first` (when given). Events are read in the background.
 */
export function openConsoleSession(call: (input: AsyncIterable<ConsoleInputInit>, options: { signal: AbortSignal }) => AsyncIterable<ConsoleEventLike>, first?: ConsoleInputInit): ConsoleTestSession {
  const queue: ConsoleInputInit[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  const input: AsyncIterable<ConsoleInputInit> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const m = queue.shift();
        if (m) {
          yield m;
          continue;
        }
        if (closed) return;
        await new Promise<void>((r) => (wake = r));
      }
    },
  };
  const push = (m: ConsoleInputInit) => {
    queue.push(m);
    wake?.();
    wake = undefined;
  };
  if (first) push(first);
  const ac = new AbortController();
  const chunks: Buffer[] = [];
  const roles: ConsoleRoleLike[] = [];
  const ended = (async () => {
    try {
      for await (const e of call(input, { signal: ac.signal })) {
        if (e.kind.case === "output") chunks.push(Buffer.from(e.kind.value.data));
        else if (e.kind.case === "role") roles.push(e.kind.value);
      }
      return undefined;
    } catch (err) {
      return ConnectError.from(err);
    }
  })();
  const text = () => Buffer.concat(chunks).toString("utf8");
  return {
    text,
    roles,
    sendRaw: push,
    type: (data) => push({ kind: { case: "data", value: typeof data === "string" ? new TextEncoder().encode(data) : data } }),
    waitText: async (t, timeoutMs = 10_000) => {
      await until(() => (text().includes(t) ? true : undefined), `console output containing ${JSON.stringify(t)} (got ${JSON.stringify(text().slice(-200))})`, timeoutMs);
    },
    waitRole: (pred, what, after = 0, timeoutMs = 10_000) => until(() => roles.slice(after).find(pred), `a role event: ${what} (got ${JSON.stringify(roles)})`, timeoutMs),
    ended,
    close: async () => {
      closed = true;
      wake?.();
      ac.abort();
      await ended;
    },
  };
}
