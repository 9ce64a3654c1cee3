import net from "node:net";

/**
 * A client of the QEMU Machine Protocol over a unix socket: reads the greeting, enters
 * command mode (qmp_capabilities), runs commands with ids and a timeout, and delivers
 * asynchronous events (SHUTDOWN, STOP, RESUME, RESET, POWERDOWN, ...).
 */

/** An asynchronous QMP event as QEMU sends it. */
export interface QmpEvent {
  readonly event: string;
  readonly data?: Record<string, unknown> | undefined;
}

/** A failed QMP command, or a connection that failed or closed while one was pending. */
export class QmpError extends Error {
  override readonly name = "QmpError";
  /** QEMU's error class (e.g. "GenericError"), or "Timeout" / "Closed" from this client. */
  constructor(readonly errorClass: string, message: string) {
    super(message);
  }
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** Options for {@link QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Keep retrying while the socket is absent or refuses, up to this long. */
  readonly timeoutMs: number;
  /** Default timeout of each command. */
  readonly commandTimeoutMs?: number;
}

/** One QMP connection. */
export class QmpClient {
  private buffered = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly eventListeners = new Set<(e: QmpEvent) => void>();
  private greeted: ((v: unknown) => void) | undefined;
  /** Resolves once the connection has closed, for whatever reason. */
  readonly closed: Promise<void>;

  private constructor(private readonly socket: net.Socket, private readonly commandTimeoutMs: number) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", () => {});
    this.closed = new Promise((resolve) => socket.on("close", () => {
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new QmpError("Closed", "QMP connection closed"));
        this.pending.delete(id);
      }
      resolve();
    }));
  }

  /** Connects (retrying until the socket accepts), waits for the greeting and enters command mode. */
  static async connect(socketPath: string, options: QmpConnectOptions): Promise<QmpClient> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      try {
        const socket = await openSocket(socketPath);
        const client = new QmpClient(socket, options.commandTimeoutMs ?? 10_000);
        try {
          await client.handshake(Math.max(1, deadline - Date.now()));
        } catch (err) {
          client.close();
          throw err;
        }
        return client;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retry = code === "ENOENT" || code === "ECONNREFUSED";
        if (!retry || Date.now() > deadline) throw err instanceof QmpError ? err : new QmpError("Closed", `cannot connect to QMP socket: ${String(err)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  /** Runs a command and resolves with its "return" value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = this.commandTimeoutMs): Promise<T> {
    if (this.socket.destroyed) return Promise.reject(new QmpError("Closed", `QMP connection closed before ${command}`));
    const id = `q${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError("Timeout", `QMP command ${command} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + "\n");
    });
  }

  /** Calls `listener` for every event; returns an unsubscribe. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Whether the connection has closed. */
  get isClosed(): boolean {
    return this.socket.destroyed;
  }

  /** Closes the connection; pending commands fail with "Closed". */
  close(): void {
    this.socket.destroy();
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeting = new Promise((resolve) => (this.greeted = resolve));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new QmpError("Timeout", "no QMP greeting")), timeoutMs)));
    const closed = this.closed.then(() => Promise.reject(new QmpError("Closed", "QMP connection closed before the greeting")));
    try {
      await Promise.race([greeting, timeout, closed]);
      await this.execute("qmp_capabilities", undefined, timeoutMs);
    } finally {
      clearTimeout(timer);
      closed.catch(() => {});
    }
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf("\n")) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // QEMU only sends JSON; a broken line is not worth tearing the connection down.
    }
    if ("QMP" in msg) {
      this.greeted?.(msg);
      this.greeted = undefined;
    } else if (typeof msg["event"] === "string") {
      const event: QmpEvent = { event: msg["event"], data: msg["data"] as Record<string, unknown> | undefined };
      for (const l of [...this.eventListeners]) l(event);
    } else if (typeof msg["id"] === "string") {
      const p = this.pending.get(msg["id"]);
      if (!p) return;
      this.pending.delete(msg["id"]);
      clearTimeout(p.timer);
      const error = msg["error"] as { class?: string; desc?: string } | undefined;
      if (error) p.reject(new QmpError(error.class ?? "GenericError", error.desc ?? "QMP command failed"));
      else p.resolve(msg["return"]);
    }
  }
}

function openSocket(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.once("connect", () => {
      socket.removeListener("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}
