/** A gRPC length-prefixed message: flags byte 0 (uncompressed), 4-byte big-endian length, payload. */
export function envelope(payload: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + payload.length);
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

/** Splits a gRPC response body into its messages, across chunk boundaries. */
export function unenvelope(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const reader = new EnvelopeReader((_len, payload) => out.push(payload!), () => true);
  reader.push(body);
  return out;
}

/**
 * Counts gRPC envelopes in a stream of chunks without decoding them: only the 5-byte
 * prefixes are parsed. A payload is copied out only when `wantPayload(length)` says so,
 * which keeps counting 10,000 streams cheap.
 */
export class EnvelopeReader {
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  private remaining = 0;
  private length = 0;
  private payload: Buffer | undefined;

  constructor(
    private readonly onMessage: (length: number, payload: Buffer | undefined) => void,
    private readonly wantPayload: (length: number) => boolean,
  ) {}

  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.headerFill < 5) {
        const n = Math.min(5 - this.headerFill, chunk.length - off);
        chunk.copy(this.header, this.headerFill, off, off + n);
        this.headerFill += n;
        off += n;
        if (this.headerFill < 5) return;
        this.length = this.remaining = this.header.readUInt32BE(1);
        this.payload = this.wantPayload(this.length) ? Buffer.alloc(this.length) : undefined;
        if (this.remaining === 0) this.finish();
        continue;
      }
      const n = Math.min(this.remaining, chunk.length - off);
      if (this.payload) chunk.copy(this.payload, this.length - this.remaining, off, off + n);
      this.remaining -= n;
      off += n;
      if (this.remaining === 0) this.finish();
    }
  }

  private finish(): void {
    const payload = this.payload;
    this.headerFill = 0;
    this.payload = undefined;
    this.onMessage(this.length, payload);
  }
}
