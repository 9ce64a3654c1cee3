import { readSync } from "node:fs";

/** What a qcow2 header says about the other files QEMU would open for it. */
export interface Qcow2Links {
  /** The backing file's name as the header gives it; undefined: none. */
  readonly backingFile: string | undefined;
  /** The backing format header extension; undefined: none (QEMU would probe). */
  readonly backingFormat: string | undefined;
  /** The incompatible feature "external data file": QEMU would open another file by name. */
  readonly externalDataFile: boolean;
}

const MAGIC = 0x514649fb;
/** Header extensions are read from the first 64 KiB only (the smallest cluster is 512 bytes; a real header is far shorter). */
const HEAD_BYTES = 65536;
const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const FEATURE_EXTERNAL_DATA = 1n << 2n;

/**
 * Reads the links of the qcow2 image on `fd` from its header (big-endian: magic, version,
 * backing file offset and size; in version 3 the incompatible features and the header
 * length; then the header extensions), or undefined when the file is not qcow2. Parsed
 * here, not by qemu-img, so the agent decides what QEMU may open before QEMU sees the
 * file; anything malformed reads as a link (refused by the caller), never as none.
 */
export function readQcow2Links(fd: number): Qcow2Links | undefined {
  const head = Buffer.alloc(HEAD_BYTES);
  const n = readSync(fd, head, 0, HEAD_BYTES, 0);
  if (n < 72 || head.readUInt32BE(0) !== MAGIC) return undefined;
  const version = head.readUInt32BE(4);
  const offset = head.readBigUInt64BE(8);
  const size = head.readUInt32BE(16);
  let backingFile: string | undefined;
  if (offset !== 0n) {
    const start = Number(offset);
    // A name outside the bytes read (or absurdly long) cannot be checked: report it as unreadable.
    backingFile = start + size <= n && size > 0 && size <= 1023 ? head.subarray(start, start + size).toString("utf8") : "\u0000unreadable";
  }
  let externalDataFile = false;
  let extStart = 72;
  if (version >= 3) {
    if (n < 104) return { backingFile: backingFile ?? "\u0000unreadable", backingFormat: undefined, externalDataFile: true };
    externalDataFile = (head.readBigUInt64BE(72) & FEATURE_EXTERNAL_DATA) !== 0n;
    extStart = head.readUInt32BE(100);
  }
  let backingFormat: string | undefined;
  for (let at = extStart; at + 8 <= n; ) {
    const type = head.readUInt32BE(at);
    const len = head.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    if (at + 8 + len > n) break;
    if (type === EXT_BACKING_FORMAT) backingFormat = head.subarray(at + 8, at + 8 + len).toString("utf8");
    at += 8 + Math.ceil(len / 8) * 8;
  }
  return { backingFile, backingFormat, externalDataFile };
}
