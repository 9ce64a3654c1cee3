/**
 * `quantix vm console`: attaches a terminal to a VM's serial console through
 * compute.v1 VMService.AttachConsole. Self-contained (only @quantix/api,
 * @connectrpc/connect and node builtins), so the CLI's command wires it to its session.
 *
 * - The scroll-back (`tailBytes`, default 16 KiB) is printed first, then new output.
 * - The terminal is put in raw mode: every key goes to the guest (Ctrl-C included, as
 *   virsh console does); the guest echoes.
 * - The escape character (default Ctrl-], `^]`, as virsh and telnet) detaches; it is
 *   never sent. End of input detaches too.
 * - One writer per VM: asking to write while another session writes makes this one a
 *   viewer (said on stderr; keys then go nowhere but the escape still detaches); `force`
 *   takes the role over, and a session displaced that way is told so.
 * - The terminal is restored on every exit path. Resolves with the exit status: 0 when
 *   detached or when the console ended (the VM was deleted), else `onError`'s (default:
 *   the error on stderr, 1).
 *
 * The transport must speak HTTP/2 (connect-node's createConnectTransport({ httpVersion:
 * "2" }) or createGrpcTransport): bidirectional streams do not exist over HTTP/1.1.
 */

import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { ConsoleRoleKind, VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";

/** Ctrl-]: the default escape character. */
export const DEFAULT_ESCAPE = "\x1d";
/** The scroll-back shown on attach unless told otherwise. */
export const DEFAULT_TAIL_BYTES = 16 * 1024;
/** The largest input message AttachConsole takes. */
const MAX_INPUT = 4096;

/** What {@link attachConsole} needs. */
export interface AttachConsoleOptions {
  /** A transport to the control plane (HTTP/2), carrying the credentials. */
  readonly transport: Transport;
  readonly vmId: string;
  /** The keys (a TTY's stdin, or any stream). */
  readonly input: NodeJS.ReadableStream;
  /** Where the guest's output goes. */
  readonly output: NodeJS.WritableStream;
  /** Where the session's own messages go (attached, viewer, displaced, detached). */
  readonly stderr: NodeJS.WritableStream;
  /** Switches the terminal's raw mode (stdin.setRawMode); absent when input is no terminal. */
  readonly setRawMode?: (on: boolean) => void;
  /** The escape character: one character, or caret notation ("^]", "^A"). Default Ctrl-]. */
  readonly escape?: string;
  /** Take the writer role from the session holding it. */
  readonly force?: boolean;
  /** Attach as a viewer: no input is sent. */
  readonly readOnly?: boolean;
  /** Scroll-back bytes printed first (0: new output only). */
  readonly tailBytes?: number;
  /** Detaches when aborted (exit 0). */
  readonly signal?: AbortSignal;
  /** Turns a failed call into an exit status; the default prints "console: <code>: <message>" and answers 1. */
  readonly onError?: (err: ConnectError) => number;
}

/** The escape byte of a caret notation or single-character string; throws on anything else. */
export function escapeByte(escape: string): number {
  if (escape.length === 2 && escape[0] === "^") {
    const c = escape.charCodeAt(1);
    if (c === 0x3f) return 0x7f;
    if (c >= 0x40 && c <= 0x5f) return c - 0x40;
    if (c >= 0x61 && c <= 0x7a) return c - 0x60;
  }
  if (escape.length === 1 && escape.charCodeAt(0) < 0x80) return escape.charCodeAt(0);
  throw new Error(`escape: must be one ASCII character or caret notation like ^], got ${JSON.stringify(escape)}`);
}

/** How the escape byte reads to a person ("^]"). */
function caret(byte: number): string {
  if (byte === 0x7f) return "^?";
  return byte < 0x20 ? `^${String.fromCharCode(byte + 0x40)}` : String.fromCharCode(byte);
}

/** Attaches until detached, the console ends or the call fails; resolves with the exit status. */
export async function attachConsole(o: AttachConsoleOptions): Promise<number> {
  const esc = escapeByte(o.escape ?? DEFAULT_ESCAPE);
  const say = (line: string) => o.stderr.write(`${line}\r\n`);
  const client = createClient(VMService, o.transport);
  const ac = new AbortController();
  const onAbort = () => ac.abort();
  o.signal?.addEventListener("abort", onAbort);
  let detached = false;
  const detach = () => {
    detached = true;
    ac.abort();
  };

  // Request messages: the attach, then keys while this session writes.
  const queue: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  let inputDone = false;
  async function* requests() {
    yield { kind: { case: "attach" as const, value: { vmId: o.vmId, tailBytes: o.tailBytes ?? DEFAULT_TAIL_BYTES, write: !o.readOnly, force: o.force === true && !o.readOnly } } };
    for (;;) {
      const data = queue.shift();
      if (data) {
        yield { kind: { case: "data" as const, value: data } };
        continue;
      }
      if (inputDone) return;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  }
  let writer = false;
  let toldViewerKeys = false;
  const onData = (chunk: Buffer | string) => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    const at = bytes.indexOf(esc);
    const keys = at < 0 ? bytes : bytes.subarray(0, at);
    if (keys.length > 0) {
      if (writer) {
        for (let i = 0; i < keys.length; i += MAX_INPUT) queue.push(keys.subarray(i, i + MAX_INPUT));
        wake?.();
      } else if (!toldViewerKeys) {
        toldViewerKeys = true;
        say(`[viewer: keys are not sent; ${caret(esc)} detaches]`);
      }
    }
    if (at >= 0) detach();
  };
  const onEnd = () => detach();

  o.setRawMode?.(true);
  o.input.on("data", onData);
  o.input.once("end", onEnd);
  o.input.resume?.();
  try {
    let attached = false;
    for await (const e of client.attachConsole(requests(), { signal: ac.signal })) {
      if (e.kind.case === "output") {
        o.output.write(e.kind.value.data);
      } else if (e.kind.case === "role") {
        const r = e.kind.value;
        if (!attached) say(`Connected to the console of VM ${o.vmId}; escape character is ${caret(esc)}`);
        attached = true;
        const was = writer;
        writer = r.role === ConsoleRoleKind.WRITER;
        if (!writer) toldViewerKeys = toldViewerKeys && !was;
        // A viewer's dropped keys: this client sends none, so nothing to tell.
        if (r.droppedBytes > 0) continue;
        if (r.role === ConsoleRoleKind.DISPLACED) say(`[displaced: ${r.message}]`);
        else if (r.role === ConsoleRoleKind.VIEWER) say(`[viewer: ${r.message}]`);
        else if (!was && o.force) say(`[writer: ${r.message}]`);
      }
    }
    if (!detached) say(`[the console ended: VM ${o.vmId} was deleted]`);
    return 0;
  } catch (err) {
    if (detached || ac.signal.aborted) return 0;
    const e = ConnectError.from(err);
    if (o.onError) return o.onError(e);
    say(`console: ${codeName(e)}: ${e.rawMessage}`);
    return 1;
  } finally {
    inputDone = true;
    wake?.();
    o.input.off("data", onData);
    o.input.off("end", onEnd);
    o.input.pause?.();
    o.signal?.removeEventListener("abort", onAbort);
    o.setRawMode?.(false);
    if (detached) say(`[detached from VM ${o.vmId}]`);
  }
}

/** "not_found" for Code.NotFound: the API's spelling. */
function codeName(e: ConnectError): string {
  return (Code[e.code] ?? String(e.code)).replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}
