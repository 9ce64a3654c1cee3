import { createHash, type Hash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import net from "node:net";
import tls from "node:tls";
import { QuantixError } from "@quantix/core";
import { ChunkedDecoder, framingOf, parseHead, type Framing, type ResponseHead } from "./http-framing.js";

// ImportVolume's download: an HTTP/1.1 GET whose body goes into a file with its SHA-256,
// with no per-chunk allocation. The socket reads straight into 1 MiB blocks (net's
// `onread`), each read is hashed while its bytes are still in the CPU's cache, and a full
// block is written with one positional write while the next fills. node:http cost about
// three times curl's CPU on the same 1 GiB (fresh 64 KiB buffers per read: page faults and
// garbage), see docs/adr/0010-image-download-client.md.

/** How a GET is made. */
export interface GetOptions {
  /** Ends the download (the connection is destroyed) when aborted. */
  readonly signal: AbortSignal;
  readonly maxRedirects: number;
  /** The longest wait for a byte, from connecting to the body's end. */
  readonly idleTimeoutMs: number;
  /** Certificates (PEM) trusted for https instead of Node's bundled CAs; absent: the bundled CAs. */
  readonly ca?: string;
  /** Bytes per block (a write to the file), at least 4 KiB; default 1 MiB. The response head must fit in one. */
  readonly blockBytes?: number;
}

/** Where and how a body is saved. */
export interface SaveOptions {
  /** RESOURCE_EXHAUSTED past this many bytes. */
  readonly limit: bigint;
  /** Called with the byte count at most every `progressEvery` bytes, from the socket's callback (must not throw). */
  readonly onProgress: (bytes: bigint) => void;
  readonly progressEvery: bigint;
  /** Stops the download; saveTo then settles (no write in flight) and rejects. */
  readonly stop: AbortSignal;
}

/** A saved body: its length and SHA-256 (lowercase hex). */
export interface Saved {
  readonly bytes: bigint;
  readonly sha256: string;
}

/** A 200 response whose body is not read yet. */
export interface HttpDownload {
  /** The body's length as announced (Content-Length); undefined when chunked or ended by the server closing. */
  readonly length: bigint | undefined;
  /** Streams the body into a new file `path` (mode 0600). UNAVAILABLE when it ends early or the connection breaks. Settles only when nothing writes the file any more. */
  saveTo(path: string, options: SaveOptions): Promise<Saved>;
  /** Closes the connection, for a body that will not be saved. */
  close(): void;
}

const REDIRECTS = [301, 302, 303, 307, 308];

/** GET `url`, following at most `maxRedirects` redirects to http(s) only; UNAVAILABLE for what cannot be fetched (no answer, not HTTP/1.x, a status other than 200). */
export async function httpGet(url: URL, options: GetOptions): Promise<HttpDownload> {
  for (let redirects = 0; ; redirects++) {
    const conn = new Connection(url, options);
    const head = await conn.head;
    const location = head.headers.get("location");
    if (REDIRECTS.includes(head.status) && location !== undefined) {
      conn.close();
      if (redirects === options.maxRedirects) throw new QuantixError("unavailable", `the image URL redirects more than ${options.maxRedirects} times`);
      const next = URL.canParse(location, url.href) ? new URL(location, url) : undefined;
      if (next === undefined) throw new QuantixError("unavailable", "the image URL redirects to an invalid URL");
      if (next.protocol !== "http:" && next.protocol !== "https:") throw new QuantixError("unavailable", `the image URL redirects to a ${next.protocol} URL`);
      url = next;
      continue;
    }
    if (head.status !== 200) {
      conn.close();
      throw new QuantixError("unavailable", `the image server answered HTTP ${head.status}`);
    }
    return conn;
  }
}

/** Bytes per block: a write to the file. Larger blocks measured no faster; the hash and the write then miss the CPU's cache. */
const BLOCK_BYTES = 1 << 20;
/** Block writes in flight at most; reading pauses until one ends. */
const WRITES_IN_FLIGHT = 4;
/** The longest response head. */
const HEAD_MAX_BYTES = 32 << 10;

/** A body being saved. */
interface Saving {
  readonly fh: FileHandle;
  readonly hash: Hash;
  readonly options: SaveOptions;
  readonly free: Buffer[];
  readonly writes: Set<Promise<void>>;
  bytes: bigint;
  reported: bigint;
  position: number;
  paused: boolean;
  writeError?: unknown;
  ok(): void;
  fail(err: unknown): void;
}

/**
 * One connection: the request, the head (`head`), then the body into blocks (`saveTo`).
 * The socket reads into `block` at `fill`; net asks for that target right after each read's
 * callback, so `block` and `fill` change only inside the callback (or before reading resumes).
 */
class Connection implements HttpDownload {
  readonly head: Promise<ResponseHead>;
  framing: Framing = { kind: "close" };
  private readonly socket: net.Socket;
  /** head: reading the head; idle: a 200 head read, reading paused until saveTo; body: saving; over: closed. */
  private mode: "head" | "idle" | "body" | "over" = "head";
  private readonly blockBytes: number;
  /** A block with less room than this is written before the next read (no small reads). */
  private readonly minRead: number;
  private block: Buffer;
  /** Bytes in `block`: raw while reading the head, body bytes (unframed) after it. */
  private fill = 0;
  /** Full blocks of body bytes that came before saveTo. */
  private held: { readonly block: Buffer; readonly length: number }[] = [];
  /** Whether the whole body came before saveTo. */
  private complete = false;
  private left = 0n;
  private readonly chunked = new ChunkedDecoder();
  private saving: Saving | undefined;
  /** What ended the connection while idle, for saveTo: undefined for a clean end. */
  private idleEnd: { readonly err: Error | undefined } | undefined;
  private headDone!: (head: ResponseHead) => void;
  private headFailed!: (err: unknown) => void;

  constructor(url: URL, options: GetOptions) {
    this.head = new Promise((resolve, reject) => ((this.headDone = resolve), (this.headFailed = reject)));
    this.blockBytes = Math.max(4096, options.blockBytes ?? BLOCK_BYTES);
    this.minRead = this.blockBytes / 16;
    this.block = Buffer.allocUnsafeSlow(this.blockBytes);
    const req = request(url);
    const secure = url.protocol === "https:";
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const connect = { host, port: Number(url.port) || (secure ? 443 : 80), signal: options.signal, onread: { buffer: () => this.block.subarray(this.fill), callback: (n: number) => this.received(n) } };
    // tls.connect takes net's options too (onread and signal included), which its types do not list.
    const tlsOptions: tls.ConnectionOptions = { ...connect, ...(options.ca !== undefined ? { ca: options.ca } : {}), ...(net.isIP(host) === 0 ? { servername: host } : {}) };
    this.socket = secure ? tls.connect(tlsOptions) : net.connect(connect);
    this.socket.setTimeout(options.idleTimeoutMs, () => this.socket.destroy(new Error(`no data for ${options.idleTimeoutMs / 1000} s`)));
    this.socket.once(secure ? "secureConnect" : "connect", () => this.socket.write(req));
    this.socket.on("error", (err) => this.ended(err));
    this.socket.on("end", () => this.ended(undefined));
    this.socket.on("close", () => this.ended(new Error("connection closed")));
  }

  get length(): bigint | undefined {
    return this.framing.kind === "length" ? this.framing.length : undefined;
  }

  close(): void {
    if (this.mode !== "body") this.mode = "over";
    this.socket.destroy();
  }

  async saveTo(path: string, options: SaveOptions): Promise<Saved> {
    if (this.mode !== "idle") throw new Error("HttpDownload.saveTo: no response to save");
    const fh = await open(path, "w", 0o600);
    let ok = (): void => undefined;
    let fail = (_err: unknown): void => undefined;
    const outcome = new Promise<void>((resolve, reject) => ((ok = resolve), (fail = reject)));
    const s: Saving = { fh, hash: createHash("sha256"), options, free: [], writes: new Set(), bytes: 0n, reported: 0n, position: 0, paused: false, ok, fail };
    this.saving = s;
    const stop = () => this.end(new QuantixError("unavailable", "the download was stopped"));
    options.stop.addEventListener("abort", stop);
    try {
      this.mode = "body";
      // The body bytes that came with the head, then what ended the connection meanwhile, or more reads.
      const reading = this.guarded(() => {
        for (const h of this.held.splice(0)) {
          this.account(h.block, 0, h.length);
          this.write(h.block, h.length);
        }
        this.account(this.block, 0, this.fill);
        return true;
      });
      if (options.stop.aborted) stop();
      else if (this.complete) this.end(undefined);
      else if (this.idleEnd !== undefined) this.ended(this.idleEnd.err);
      else if (reading) this.socket.resume();
      await outcome;
    } finally {
      options.stop.removeEventListener("abort", stop);
      this.socket.destroy();
      await Promise.all(s.writes);
      await fh.close();
    }
    if (s.writeError !== undefined) throw writeFailed(s.writeError);
    return { bytes: s.bytes, sha256: s.hash.digest("hex") };
  }

  /** The socket's read callback: `n` new bytes at `block[fill]`. False pauses reading. */
  private received(n: number): boolean {
    switch (this.mode) {
      case "head":
        return this.guarded(() => this.headBytes(n));
      case "idle":
      case "body":
        return this.guarded(() => this.bodyBytes(this.fill, this.fill + n));
      case "over":
        return false;
    }
  }

  private guarded(step: () => boolean): boolean {
    try {
      return step();
    } catch (err) {
      if (this.mode === "head") this.headFailed(err);
      this.end(err);
      this.mode = "over";
      this.socket.destroy();
      return false;
    }
  }

  private headBytes(n: number): boolean {
    let from = Math.max(0, this.fill - 3);
    this.fill += n;
    for (;;) {
      const at = this.block.subarray(0, this.fill).indexOf("\r\n\r\n", from, "latin1");
      if (at < 0) {
        if (this.fill > HEAD_MAX_BYTES || this.fill === this.blockBytes) throw new QuantixError("unavailable", "the image server's response head is too long");
        return true;
      }
      const head = parseHead(this.block.toString("latin1", 0, at));
      // What follows the head is the body's start (or, after a 1xx, the next head).
      const raw = this.fill - (at + 4);
      this.block.copyWithin(0, at + 4, this.fill);
      this.fill = raw;
      from = 0;
      if (head.status < 200) continue;
      if (head.status === 200) {
        this.framing = framingOf(head);
        if (this.framing.kind === "length") this.left = this.framing.length;
      }
      this.mode = "idle";
      this.headDone(head);
      this.fill = 0;
      if (head.status === 200) this.bodyBytes(0, raw);
      return false;
    }
  }

  /**
   * Body bytes (raw, still framed) at `block[from, to)`: unframed in place, then counted
   * and hashed (before saveTo: when it starts); a full block written (before saveTo: held).
   */
  private bodyBytes(from: number, to: number): boolean {
    let end = to;
    if (this.framing.kind === "chunked") end = this.chunked.take(this.block, from, to);
    else if (this.framing.kind === "length") {
      end = from + Number(this.left < BigInt(to - from) ? this.left : BigInt(to - from));
      this.left -= BigInt(end - from);
    }
    const s = this.mode === "body" ? this.saving : undefined;
    if (s) {
      this.account(this.block, from, end);
      if (this.mode !== "body") return false; // stopped from onProgress
    }
    this.fill = end;
    if ((this.framing.kind === "length" && this.left === 0n) || this.chunked.done) {
      if (s) this.end(undefined);
      else this.complete = true;
      return false;
    }
    if (this.blockBytes - this.fill >= this.minRead) return s !== undefined;
    if (s) this.write(this.block, this.fill);
    else this.held.push({ block: this.block, length: this.fill });
    this.block = s?.free.pop() ?? Buffer.allocUnsafeSlow(this.blockBytes);
    this.fill = 0;
    if (!s) return false;
    s.paused = s.writes.size >= WRITES_IN_FLIGHT;
    return !s.paused;
  }

  /** Body bytes at `block[from, end)`: counted against the limit, hashed, progress reported. */
  private account(block: Buffer, from: number, end: number): void {
    const s = this.saving!;
    if (end === from) return;
    s.bytes += BigInt(end - from);
    if (s.bytes > s.options.limit) throw new QuantixError("resource_exhausted", `the download passed the pool's ${s.options.limit} available bytes`);
    s.hash.update(block.subarray(from, end));
    if (s.bytes - s.reported >= s.options.progressEvery) {
      s.reported = s.bytes;
      s.options.onProgress(s.bytes);
    }
  }

  /** Writes `block[0, length)` at the file's next position; the block returns to the free list when written. */
  private write(block: Buffer, length: number): void {
    const s = this.saving!;
    const position = s.position;
    s.position += length;
    const done = writeAll(s.fh, block, length, position).then(
      () => void s.free.push(block),
      (err: unknown) => {
        s.writeError ??= err;
        this.end(writeFailed(err));
      },
    );
    const w = done.finally(() => {
      s.writes.delete(w);
      if (s.paused && this.mode === "body") {
        s.paused = false;
        this.socket.resume();
      }
    });
    s.writes.add(w);
  }

  /** Ends saving, once: the last block written on success. */
  private end(err: unknown): void {
    if (this.mode !== "body") return;
    this.mode = "over";
    this.socket.destroy();
    const s = this.saving!;
    if (err === undefined) {
      if (this.fill > 0) this.write(this.block, this.fill);
      s.ok();
    } else s.fail(err);
  }

  /** The socket ended (cleanly when `err` is undefined) or broke. */
  private ended(err: Error | undefined): void {
    switch (this.mode) {
      case "head":
        this.mode = "over";
        this.headFailed(
          err === undefined
            ? new QuantixError("unavailable", "the image server closed the connection without an answer")
            : new QuantixError("unavailable", `cannot download the image: ${reason(err)}`, [], { cause: err }),
        );
        return;
      case "idle":
        this.idleEnd ??= { err };
        return;
      case "body": {
        if (err === undefined && this.framing.kind === "close") return this.end(undefined);
        const of = this.framing.kind === "length" ? ` of ${this.framing.length}` : "";
        return this.end(new QuantixError("unavailable", `the download ended early after ${this.saving!.bytes}${of} bytes${err ? `: ${reason(err)}` : ""}`, [], { cause: err }));
      }
      case "over":
        return;
    }
  }
}

/** The request: HTTP/1.1, the body as stored (no content coding), one request per connection. */
function request(url: URL): string {
  // WHATWG URL percent-encodes spaces and control characters; checked again, as nothing user-given may break the request line.
  const target = `${url.pathname || "/"}${url.search}`;
  if (/[\s]/.test(target + url.host)) throw new QuantixError("unavailable", "the image URL cannot be requested");
  return `GET ${target} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: quantix-agent\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n`;
}

async function writeAll(fh: FileHandle, block: Buffer, length: number, position: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const { bytesWritten } = await fh.write(block, done, length - done, position + done);
    done += bytesWritten;
  }
}

function reason(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message;
}

function writeFailed(err: unknown): QuantixError {
  return new QuantixError("unavailable", `cannot write the download: ${err instanceof Error ? reason(err) : String(err)}`, [], { cause: err });
}
