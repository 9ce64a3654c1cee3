import * as http from "node:http";
import type { Duplex } from "node:stream";
import { ConnectError, createClient, type Transport } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConsoleRoleKind, VMService, type ConsoleEvent, type ConsoleInputSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { codeLabel, peerOfSocket, type Peer, type UpgradeHandler } from "@quantix/rpc";
import { WebSocketServer, type WebSocket } from "ws";
import { MAX_CONSOLE_INPUT_BYTES } from "../rpc/vm-console-routes.js";
import { authHeaders, boolParam, consolePathVmId, errorText, intParam, QueryError, requestUrl } from "./console-http.js";

/** Largest WebSocket frame a client may send; longer input is split into AttachConsole messages of 4 KiB. */
export const MAX_WS_FRAME_BYTES = 64 * 1024;

const ROLE_NAMES: Record<number, string> = { [ConsoleRoleKind.WRITER]: "writer", [ConsoleRoleKind.VIEWER]: "viewer", [ConsoleRoleKind.DISPLACED]: "displaced" };

/**
 * `GET /v1/vms/{id}/console/ws`: AttachConsole for browsers, which cannot open a
 * bidirectional gRPC stream (frame protocol: docs/api/vm-service.md). The attach options
 * are query parameters (tail_bytes, from_offset, write, force), so the RPC starts before
 * the upgrade: a refusal (no token, no role, unknown VM, no console) is an ordinary HTTP
 * status with "code: message" as text, and a 101 means the session is attached. The RPC
 * runs in process with the request's credentials (Authorization header or access_token
 * query parameter), through the same interceptor chain as any call.
 */
export function consoleWebSocket(transport: (peer: Peer) => Transport): UpgradeHandler & { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_FRAME_BYTES, perMessageDeflate: false });
  const handler = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = requestUrl(req.url);
    const vmId = url && consolePathVmId(url.pathname, "/ws");
    if (url === undefined || vmId === undefined || req.method !== "GET") return refuse(socket, 404, `not_found: no WebSocket endpoint at ${String(url?.pathname ?? req.url).slice(0, 200)}; the console's is GET /v1/vms/{id}/console/ws\n`);
    let attach: MessageInitShape<typeof ConsoleInputSchema>;
    try {
      attach = { kind: { case: "attach", value: { vmId, tailBytes: intParam(url.searchParams, "tail_bytes", 1024 * 1024), fromOffset: BigInt(intParam(url.searchParams, "from_offset", Number.MAX_SAFE_INTEGER)), write: boolParam(url.searchParams, "write"), force: boolParam(url.searchParams, "force") } } };
    } catch (err) {
      if (err instanceof QueryError) return refuse(socket, 400, `invalid_argument: ${err.message}\n`);
      throw err;
    }
    const input = new InputQueue();
    input.push(attach);
    const ac = new AbortController();
    const onEarlyClose = () => ac.abort();
    socket.once("close", onEarlyClose);
    socket.on("error", () => socket.destroy());
    const client = createClient(VMService, transport(peerOfSocket(req.socket as Parameters<typeof peerOfSocket>[0])));
    const events = client.attachConsole(input, { signal: ac.signal, headers: authHeaders(req, url.searchParams) })[Symbol.asyncIterator]();
    // The first event (the session's role) says the attach succeeded.
    events.next().then(
      (first) => {
        socket.off("close", onEarlyClose);
        if (socket.destroyed) return ac.abort();
        wss.handleUpgrade(req, socket, head, (ws) => void session(ws, first.done ? undefined : first.value, events, input, ac));
      },
      (err: unknown) => {
        const e = errorText(err);
        refuse(socket, e.status, e.body);
      },
    );
  };
  return Object.assign(handler, { close: () => wss.close() });
}

/** Pumps events to the socket and frames to the input queue until either side ends. */
async function session(ws: WebSocket, first: ConsoleEvent | undefined, events: AsyncIterator<ConsoleEvent>, input: InputQueue, ac: AbortController): Promise<void> {
  // Input waits here while the agent paces it: past 1 MiB queued, the socket stops being read until the queue drains.
  input.onDrained(() => ws.isPaused && ws.resume());
  ws.on("message", (data: Buffer | ArrayBuffer | Buffer[], _isBinary: boolean) => {
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    for (let i = 0; i < bytes.length; i += MAX_CONSOLE_INPUT_BYTES) input.push({ kind: { case: "data", value: bytes.subarray(i, i + MAX_CONSOLE_INPUT_BYTES) } });
    if (input.queuedBytes > MAX_QUEUED_INPUT_BYTES) ws.pause();
  });
  ws.on("close", () => {
    input.end();
    ac.abort();
  });
  ws.on("error", () => ws.terminate());
  const send = (data: Uint8Array | string) => new Promise<void>((resolve) => ws.send(data, { binary: typeof data !== "string" }, () => resolve()));
  const forward = (e: ConsoleEvent) => {
    if (e.kind.case === "output") return send(e.kind.value.data);
    if (e.kind.case === "role") {
      const r = e.kind.value;
      return send(JSON.stringify({ type: "role", role: ROLE_NAMES[r.role] ?? "unknown", writer_present: r.writerPresent, message: r.message, dropped_bytes: r.droppedBytes }));
    }
    return Promise.resolve();
  };
  try {
    if (first) await forward(first);
    for (;;) {
      const r = await events.next();
      if (r.done) break;
      if (ws.readyState !== ws.OPEN) return;
      await forward(r.value);
    }
    if (ws.readyState === ws.OPEN) ws.close(1000, "the console ended (the VM was deleted)");
  } catch (err) {
    if (ac.signal.aborted || ws.readyState !== ws.OPEN) return;
    const e = ConnectError.from(err);
    await send(JSON.stringify({ type: "error", code: codeLabel(e.code), message: e.rawMessage }));
    // 4000 + the HTTP status the code maps to (4400 invalid_argument, 4412 failed_precondition, ...).
    ws.close(4000 + errorText(e).status, codeLabel(e.code));
  }
}

/** Answers a request that is not upgraded with a plain-text HTTP response, then closes. */
function refuse(socket: Duplex, status: number, body: string): void {
  if (socket.destroyed) return;
  const reason = http.STATUS_CODES[status] ?? "Error";
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** Input bytes a WebSocket session may have waiting before its socket is paused. */
const MAX_QUEUED_INPUT_BYTES = 1024 * 1024;

/** AttachConsole's request messages: pushed as frames arrive, read by the RPC. */
class InputQueue implements AsyncIterable<MessageInitShape<typeof ConsoleInputSchema>> {
  private readonly items: MessageInitShape<typeof ConsoleInputSchema>[] = [];
  private wake: (() => void) | undefined;
  private done = false;
  private drained: () => void = () => undefined;
  /** Input bytes pushed and not yet taken by the RPC. */
  queuedBytes = 0;
  push(m: MessageInitShape<typeof ConsoleInputSchema>): void {
    if (this.done) return;
    this.items.push(m);
    if (m.kind?.case === "data") this.queuedBytes += m.kind.value.length;
    this.wake?.();
  }
  /** Called whenever the queue becomes empty. */
  onDrained(fn: () => void): void {
    this.drained = fn;
  }
  end(): void {
    this.done = true;
    this.wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<MessageInitShape<typeof ConsoleInputSchema>> {
    for (;;) {
      const m = this.items.shift();
      if (m) {
        if (m.kind?.case === "data") this.queuedBytes -= m.kind.value.length;
        if (this.items.length === 0) this.drained();
        yield m;
        continue;
      }
      if (this.done) return;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }
}
