import { connect as tcpConnect, type Socket } from "node:net";
import { nowMs } from "./stats.js";

/**
 * A minimal HTTP/2 client over a raw TCP socket, for timing deliveries to many streams
 * on one connection. It writes its requests as literal (unindexed) HPACK headers, skips
 * the server's header blocks without decoding them, and timestamps DATA payloads with
 * the time their TCP chunk arrived: unlike node:http2, it spends well under a
 * microsecond per frame, so a delivery's time is the network's and the server's, not
 * this harness's event dispatch (which, at 10,000 streams, would add ~100 ms).
 */
export class RawH2 {
  private buf: Buffer = Buffer.alloc(0);
  private readonly ended = new Set<number>();
  /** Streams that ended or were reset before the client was closed. */
  errors = 0;
  /** Of those, how each ended: "trailers" (the server ended it, with a status this client does not decode), "rst <code>", "goaway <code>". */
  readonly endings = new Map<string, number>();
  private closing = false;

  private constructor(
    private readonly socket: Socket,
    private readonly onData: (streamIndex: number, payload: Buffer, t: number) => void,
  ) {
    socket.on("data", (chunk: Buffer) => this.read(chunk, nowMs()));
    socket.on("error", () => undefined);
  }

  /** Connects and sends the preface, SETTINGS (no push, maximal windows) and a connection WINDOW_UPDATE. */
  static async connect(url: string, onData: (streamIndex: number, payload: Buffer, t: number) => void): Promise<RawH2> {
    const u = new URL(url);
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = tcpConnect(Number(u.port), u.hostname, () => resolve(s));
      s.once("error", reject);
    });
    socket.setNoDelay(true);
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(0x2, 0); // ENABLE_PUSH
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(0x4, 6); // INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(0x7fffffff, 8);
    const winc = Buffer.alloc(4);
    winc.writeUInt32BE(0x7fffffff - 65535, 0);
    socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(4, 0, 0, settings), frame(8, 0, 0, winc)]));
    return new RawH2(socket, onData);
  }

  /** Opens `n` POST streams (ids 1, 3, 5, ...) with the same headers and body, in one write. */
  open(n: number, headers: Record<string, string>, body: Buffer): void {
    const block = hpackLiterals(headers);
    const frames: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const id = 2 * i + 1;
      frames.push(frame(1, 0x4, id, block), frame(0, 0x1, id, body));
    }
    this.socket.write(Buffer.concat(frames));
  }

  close(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private read(chunk: Buffer, t: number): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let off = 0;
    while (this.buf.length - off >= 9) {
      const len = this.buf.readUIntBE(off, 3);
      if (this.buf.length - off < 9 + len) break;
      const type = this.buf[off + 3]!;
      const flags = this.buf[off + 4]!;
      const id = this.buf.readUInt32BE(off + 5) & 0x7fffffff;
      const payload = this.buf.subarray(off + 9, off + 9 + len);
      off += 9 + len;
      if (type === 0) {
        const pad = flags & 0x8 ? payload[0]! : -1;
        const data = pad >= 0 ? payload.subarray(1, payload.length - pad) : payload;
        if (data.length > 0) this.onData((id - 1) / 2, data, t);
        if (flags & 0x1) this.end(id, "data end");
      } else if (type === 1) {
        if (flags & 0x1) this.end(id, "trailers");
      } else if (type === 3) {
        this.end(id, `rst ${payload.readUInt32BE(0)}`);
      } else if (type === 7) {
        this.count(`goaway ${payload.readUInt32BE(4)} (last stream ${payload.readUInt32BE(0) & 0x7fffffff})`);
      } else if (type === 4 && !(flags & 0x1)) {
        this.socket.write(frame(4, 0x1, 0, Buffer.alloc(0)));
      } else if (type === 6 && !(flags & 0x1)) {
        this.socket.write(frame(6, 0x1, 0, Buffer.from(payload)));
      }
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }

  private end(id: number, how: string): void {
    if (this.ended.has(id)) return;
    this.ended.add(id);
    if (this.closing) return;
    this.errors++;
    this.count(how);
  }

  private count(how: string): void {
    this.endings.set(how, (this.endings.get(how) ?? 0) + 1);
  }
}

function frame(type: number, flags: number, id: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK header block of literal fields without indexing, new names, no Huffman coding. */
function hpackLiterals(headers: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(headers)) {
    parts.push(Buffer.from([0x00]), hpackString(name), hpackString(value));
  }
  return Buffer.concat(parts);
}

function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, "latin1");
  if (bytes.length >= 127) throw new Error(`header field too long for this client: ${s}`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}
