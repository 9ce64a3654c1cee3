import { QuantixError } from "@quantix/core";

// The pure half of ImportVolume's HTTP/1.1 client (http-download.ts): a response head's
// status and headers, how its body ends, and chunked transfer coding decoded in place.
// No I/O, so each rule is tested on bytes alone.

/** A response's status line and header fields (names lowercased, repeated fields joined with ", "). */
export interface ResponseHead {
  readonly status: number;
  readonly headers: ReadonlyMap<string, string>;
}

/** How a response body ends: after `length` bytes, at chunked coding's last chunk, or when the server closes the connection. */
export type Framing = { readonly kind: "length"; readonly length: bigint } | { readonly kind: "chunked" } | { readonly kind: "close" };

const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;

function malformed(what: string): QuantixError {
  return new QuantixError("unavailable", `the image server's response is not valid HTTP/1.1: ${what}`);
}

/** Parses a response head (the bytes before the blank line, as latin1). UNAVAILABLE for anything that is not HTTP/1.x. */
export function parseHead(text: string): ResponseHead {
  const lines = text.split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? "");
  if (!status) throw malformed("bad status line");
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    // A folded line (leading space) or a name with spaces is refused, as RFC 9112 says a client may.
    if (colon <= 0 || !TOKEN.test(name)) throw malformed("bad header line");
    const value = line.slice(colon + 1).trim();
    const seen = headers.get(name);
    headers.set(name, seen === undefined ? value : `${seen}, ${value}`);
  }
  return { status: Number(status[1]), headers };
}

/** How the body of a 200 response ends (RFC 9112 §6.3). UNAVAILABLE for a transfer coding other than chunked, or a bad or conflicting Content-Length. */
export function framingOf(head: ResponseHead): Framing {
  const te = head.headers.get("transfer-encoding");
  if (te !== undefined) {
    if (te.toLowerCase() !== "chunked") throw new QuantixError("unavailable", `the image server sent transfer-encoding '${te.slice(0, 40)}'; only chunked is supported`);
    return { kind: "chunked" };
  }
  const cl = head.headers.get("content-length");
  if (cl === undefined) return { kind: "close" };
  const values = new Set(cl.split(",").map((v) => v.trim()));
  const [only] = values;
  if (values.size !== 1 || only === undefined || !/^\d{1,19}$/.test(only)) throw malformed("bad content-length");
  return { kind: "length", length: BigInt(only) };
}

type ChunkState = "size" | "ext" | "size-lf" | "data" | "data-cr" | "data-lf" | "trailer" | "trailer-line" | "end-lf" | "done";

/** The most hex digits of a chunk size: 13 (2^52 bytes), within a number's exact range. */
const MAX_SIZE_DIGITS = 13;

/**
 * Decodes chunked transfer coding (RFC 9112 §7.1) as the bytes arrive, in place: `take`
 * moves the payload among `buf[from, to)` down to start at `from` and returns where it
 * ends, so the framing never reaches the file and no byte is copied to another buffer.
 * Chunk extensions and trailer fields are skipped. UNAVAILABLE for malformed coding.
 */
export class ChunkedDecoder {
  private state: ChunkState = "size";
  private size = 0;
  private digits = 0;
  private remaining = 0;

  /** Whether the last chunk and the trailer have been read. */
  get done(): boolean {
    return this.state === "done";
  }

  take(buf: Buffer, from: number, to: number): number {
    let out = from;
    let i = from;
    while (i < to && this.state !== "done") {
      if (this.state === "data") {
        const n = Math.min(this.remaining, to - i);
        if (out !== i) buf.copyWithin(out, i, i + n);
        out += n;
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = "data-cr";
        continue;
      }
      const c = buf[i++]!;
      switch (this.state) {
        case "size": {
          const digit = hexValue(c);
          if (digit >= 0 && this.digits < MAX_SIZE_DIGITS) {
            this.size = this.size * 16 + digit;
            this.digits++;
          } else if (this.digits > 0 && (c === 0x3b || c === 0x20 || c === 0x09)) this.state = "ext";
          else if (this.digits > 0 && c === 0x0d) this.state = "size-lf";
          else throw malformed("bad chunk size");
          break;
        }
        case "ext":
          if (c === 0x0d) this.state = "size-lf";
          break;
        case "size-lf":
          if (c !== 0x0a) throw malformed("bad chunk size line");
          this.state = this.size === 0 ? "trailer" : "data";
          this.remaining = this.size;
          this.size = 0;
          this.digits = 0;
          break;
        case "data-cr":
          if (c !== 0x0d) throw malformed("chunk longer than its size");
          this.state = "data-lf";
          break;
        case "data-lf":
          if (c !== 0x0a) throw malformed("chunk longer than its size");
          this.state = "size";
          break;
        case "trailer":
          this.state = c === 0x0d ? "end-lf" : "trailer-line";
          break;
        case "trailer-line":
          if (c === 0x0a) this.state = "trailer";
          break;
        case "end-lf":
          if (c !== 0x0a) throw malformed("bad end of chunked body");
          this.state = "done";
          break;
      }
    }
    return out;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
