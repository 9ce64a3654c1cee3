import { readFileSync } from "node:fs";
import WebSocket from "ws";
import { withTimeout } from "./stats.js";

/**
 * Environment that makes a server started by startServer open V8's inspector on a free
 * loopback port (printed to its log), so that {@link heapAfterGc} can read what it keeps.
 */
export const INSPECT_ENV = { NODE_OPTIONS: "--inspect=127.0.0.1:0" };

/**
 * V8's used heap of a process started with {@link INSPECT_ENV}, after full garbage
 * collections: what the process keeps, unlike RSS, which also counts the heap V8 grew to
 * and has not given back. Over the inspector protocol (HeapProfiler.collectGarbage, then
 * Runtime.getHeapUsage); the session is closed again before this returns.
 */
export async function heapAfterGc(logFile: string): Promise<number> {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(readFileSync(logFile, "utf8"));
  if (!m) throw new Error(`no inspector address in ${logFile}: start the process with INSPECT_ENV`);
  const ws = new WebSocket(m[1]!);
  try {
    await withTimeout(new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)), 10_000, "the inspector's WebSocket");
    let id = 0;
    const call = (method: string) =>
      withTimeout(
        new Promise<Record<string, unknown>>((resolve, reject) => {
          const my = ++id;
          const onMessage = (data: WebSocket.RawData) => {
            const msg = JSON.parse(data.toString()) as { id?: number; result?: Record<string, unknown>; error?: { message: string } };
            if (msg.id !== my) return;
            ws.off("message", onMessage);
            if (msg.error) reject(new Error(`${method}: ${msg.error.message}`));
            else resolve(msg.result ?? {});
          };
          ws.on("message", onMessage);
          ws.send(JSON.stringify({ id: my, method }));
        }),
        60_000,
        method,
      );
    // Several passes: objects freed by one (weak references, finalizers) go in the next.
    for (let i = 0; i < 3; i++) await call("HeapProfiler.collectGarbage");
    const used = (await call("Runtime.getHeapUsage"))["usedSize"];
    if (typeof used !== "number") throw new Error("Runtime.getHeapUsage gave no usedSize");
    return used;
  } finally {
    ws.close();
  }
}
