import { lstat, realpath } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { QuantixError } from "@quantix/core";
import { detectFormat } from "./detect-format.js";
import { MAX_VOLUME_BYTES } from "./ids.js";
import { QemuImg, type ImgFormat, type ImgInfo } from "./qemu-img.js";

/** Why an image was refused, machine-readable. */
export type RefusalReason = "NOT_A_FILE" | "UNKNOWN_FORMAT" | "FORMAT_MISMATCH" | "BACKING_FILE" | "DATA_FILE" | "EXTERNAL_EXTENT" | "CORRUPT" | "TOO_LARGE";

/** An image the agent will not use, with the reason; FAILED_PRECONDITION to a caller. */
export class ImageRefusedError extends QuantixError {
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super("failed_precondition", `image refused: ${message}`);
  }
}

/** What an accepted image is. */
export interface ImageInspection {
  readonly format: ImgFormat;
  /** Raw data that is an ISO 9660 file system (for CD-ROM use). */
  readonly iso: boolean;
  readonly virtualSizeBytes: bigint;
  readonly actualSizeBytes: bigint;
  /** The backing file, only ever a sibling in `backingDir` (see {@link InspectOptions}). */
  readonly backing?: { readonly file: string; readonly format: "qcow2" | "raw" };
  /** The image is encrypted (qcow2 AES or LUKS): unusable without its key. */
  readonly encrypted: boolean;
  /** How many internal snapshots it carries. */
  readonly internalSnapshots: number;
}

/** How to inspect. */
export interface InspectOptions {
  /** The format the file must have (a volume's, from its name); absent: detected from the content. */
  readonly format?: ImgFormat;
  /**
   * The directory whose volumes may serve as backing files (a pool's): a backing file is
   * accepted only as a bare `<uuid>.<qcow2|raw>` name in it with the matching explicit
   * backing format. Absent: any backing file is refused (an image to import).
   */
  readonly backingDir?: string;
  /** Largest virtual size accepted (default 64 TiB). */
  readonly maxVirtualBytes?: bigint;
  readonly qemuImg?: QemuImg;
  /** false: read without `-U`, so the inspection also fails while another process (a VM) holds the image's lock. Default true. */
  readonly shared?: boolean;
}

const VOLUME_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(qcow2|raw)$/;

/**
 * Inspects a file the agent did not necessarily write (an upload, a download, a file found
 * in a shared pool) before anything uses it: its format comes from its content (or must
 * be `options.format`), qemu-img reads it with that format named (`-f`, `-U`, under
 * prlimit), and it is refused with {@link ImageRefusedError} when it is not a regular file
 * (a symlink, a device, a FIFO), of a format the
 * agent does not take, claims another format, has a backing file outside `backingDir` or
 * without an explicit format, an external data file, a VMDK extent in another file, the
 * corrupt flag, or a virtual size beyond the limit. These are the attacks qemu-img info
 * exposes (research §4 "Hostile images"): such an image, once attached, reads or zeroes
 * host files.
 */
export async function inspectImage(path: string, options: InspectOptions = {}): Promise<ImageInspection> {
  const qemuImg = options.qemuImg ?? new QemuImg();
  // Not followed: a symlink could name a host disk, and opening a FIFO would hang the agent.
  const st = await lstat(path);
  if (!st.isFile()) throw new ImageRefusedError("NOT_A_FILE", `it is not a regular file (a ${st.isSymbolicLink() ? "symlink" : "device, FIFO or directory"})`);
  // A raw volume holds whatever its guest wrote, a qcow2 header included: its content says
  // nothing about its format, and read as raw it cannot name another file.
  const detected = options.format === "raw" ? { kind: "known" as const, format: "raw" as const, iso: false } : await detectFormat(path);
  if (detected.kind === "refused") throw new ImageRefusedError("UNKNOWN_FORMAT", `${detected.format} images are not accepted (qcow2, raw, vmdk, vdi, vhdx and vpc are)`);
  const format = options.format ?? detected.format;
  if (detected.format !== format) throw new ImageRefusedError("FORMAT_MISMATCH", `the file should be ${format} but its content is ${detected.format}`);
  const info = await qemuImg.info(path, format, { shared: options.shared ?? true });
  if (info.format !== format) throw new ImageRefusedError("FORMAT_MISMATCH", `qemu-img reads it as ${info.format}, not ${format}`);
  const data = info["format-specific"]?.data ?? {};
  if (data["corrupt"] === true) throw new ImageRefusedError("CORRUPT", "the qcow2 corrupt flag is set (qemu-img check -r may repair it)");
  if (data["data-file"] !== undefined) throw new ImageRefusedError("DATA_FILE", "it keeps its data in an external data file");
  if (Array.isArray(data["extents"])) {
    const real = await realpath(path);
    for (const e of data["extents"] as { filename?: unknown }[]) {
      if (e.filename !== path && e.filename !== real) throw new ImageRefusedError("EXTERNAL_EXTENT", "a VMDK extent lives in another file");
    }
  }
  const backing = await checkBacking(info, options.backingDir);
  const max = options.maxVirtualBytes ?? MAX_VOLUME_BYTES;
  const virtual = BigInt(info["virtual-size"]);
  if (virtual > max) throw new ImageRefusedError("TOO_LARGE", `its virtual size ${virtual} bytes is above the limit of ${max}`);
  return { format, iso: detected.iso, virtualSizeBytes: virtual, actualSizeBytes: BigInt(info["actual-size"] ?? 0), ...(backing ? { backing } : {}), encrypted: info.encrypted === true, internalSnapshots: info.snapshots?.length ?? 0 };
}

async function checkBacking(info: ImgInfo, backingDir: string | undefined): Promise<ImageInspection["backing"]> {
  const name = info["backing-filename"];
  if (name === undefined) return undefined;
  if (backingDir === undefined) throw new ImageRefusedError("BACKING_FILE", "it has a backing file (an image to import must be self-contained)");
  const m = VOLUME_FILE.exec(name);
  const format = info["backing-filename-format"];
  if (m === null || basename(name) !== name) throw new ImageRefusedError("BACKING_FILE", "its backing file is not a volume of the same pool");
  if (format !== m[1]) throw new ImageRefusedError("BACKING_FILE", "its backing file has no explicit format matching its name");
  const full = info["full-backing-filename"];
  const dir = await realpath(backingDir).catch(() => backingDir);
  if (full === undefined || (dirname(full) !== backingDir && dirname(full) !== dir) || full !== join(dirname(full), name)) {
    throw new ImageRefusedError("BACKING_FILE", "its backing file resolves outside the pool");
  }
  return { file: name, format: format as "qcow2" | "raw" };
}
