import { execFile, type ExecFileException } from "node:child_process";
import { basename } from "node:path";
import { QuantixError } from "@quantix/core";

/** The formats the agent names to qemu-img; always passed explicitly (`-f`, `-F`, `-O`), never probed. */
export type ImgFormat = "qcow2" | "raw" | "vmdk" | "vdi" | "vhdx" | "vpc";

/** How qemu-img is run: the binary and the limits of one call. */
export interface QemuImgOptions {
  /** The qemu-img binary (default `qemu-img` on PATH). */
  readonly binary?: string;
  /** Longest time of one call in ms before it is killed (default 10 minutes; info gets 30 s). */
  readonly timeoutMs?: number;
}

/** Most bytes of output read from one call: `info --output=json` of a sane image is a few KiB. */
const MAX_OUTPUT_BYTES = 1 << 20;
/** Most bytes of qemu-img's complaint a client is told. */
const MAX_MESSAGE_CHARS = 300;
const INFO_TIMEOUT_MS = 30_000;
/** Limits of `qemu-img info` on a file the agent did not write (oVirt's: 30 s of CPU, 1 GiB of address space). */
const PRLIMIT = ["--cpu=30", "--as=1073741824"];

/** What qemu-img says about an image (`info --output=json`), the fields the agent reads. */
export interface ImgInfo {
  readonly "virtual-size": number;
  readonly "actual-size"?: number;
  readonly format: string;
  readonly "backing-filename"?: string;
  readonly "full-backing-filename"?: string;
  readonly "backing-filename-format"?: string;
  readonly "format-specific"?: { readonly type?: string; readonly data?: Record<string, unknown> };
  readonly snapshots?: readonly { readonly name: string; readonly "date-sec": number; readonly "date-nsec": number; readonly "vm-state-size": number }[];
  readonly encrypted?: boolean;
}

/**
 * qemu-img through execFile with argument arrays (no shell), bounded output and a
 * timeout. Every call names the formats; reads pass `-U` so a volume a VM holds open can
 * still be inspected. Failures are QuantixErrors whose message is qemu-img's own first
 * lines with absolute paths cut to their file names (the cause keeps the rest for the log).
 */
export class QemuImg {
  readonly #binary: string;
  readonly #timeoutMs: number;
  #prlimit: Promise<boolean> | undefined;

  constructor(options: QemuImgOptions = {}) {
    this.#binary = options.binary ?? "qemu-img";
    this.#timeoutMs = options.timeoutMs ?? 600_000;
  }

  /** `qemu-img --version`'s first line, or undefined when qemu-img cannot run. */
  async version(): Promise<string | undefined> {
    return run(this.#binary, ["--version"], INFO_TIMEOUT_MS).then(
      (out) => out.split("\n")[0]?.trim(),
      () => undefined,
    );
  }

  /**
   * `info --output=json -U -f <format>`, under prlimit when the host has it. With
   * `shared: false` (no `-U`) it fails with FAILED_PRECONDITION while another process,
   * e.g. a running VM, holds the image's lock: the agent's in-use test.
   */
  async info(path: string, format: ImgFormat, { shared = true }: { readonly shared?: boolean } = {}): Promise<ImgInfo> {
    const args = ["info", "--output=json", ...(shared ? ["-U"] : []), "-f", format, absolute(path)];
    const limited = await (this.#prlimit ??= run("prlimit", ["--version"], INFO_TIMEOUT_MS).then(
      () => true,
      () => false,
    ));
    const out = limited ? await run("prlimit", [...PRLIMIT, this.#binary, ...args], INFO_TIMEOUT_MS) : await run(this.#binary, args, INFO_TIMEOUT_MS);
    try {
      return JSON.parse(out) as ImgInfo;
    } catch (err) {
      throw new QuantixError("internal", "qemu-img info printed something that is not JSON", [], { cause: err });
    }
  }

  /**
   * `qemu-img check -f <format>`: whether the image's metadata is consistent (no
   * corruption, no leaked clusters, no check error). Any failure to check counts as not
   * consistent.
   */
  async consistent(path: string, format: ImgFormat): Promise<boolean> {
    return run(this.#binary, ["check", "-q", "-f", format, absolute(path)], this.#timeoutMs).then(
      () => true,
      () => false,
    );
  }

  /** An empty image of `size` bytes; or, with `backing`, an overlay on it (relative to `path`'s directory). */
  async create(path: string, format: "qcow2" | "raw", size: bigint | undefined, backing?: { readonly file: string; readonly format: ImgFormat }): Promise<void> {
    const args = ["create", "-q", "-f", format];
    if (backing) args.push("-b", backing.file, "-F", backing.format);
    args.push(absolute(path));
    if (size !== undefined) args.push(String(size));
    await run(this.#binary, args, this.#timeoutMs);
  }

  /** A full copy of `from` (as it was at internal snapshot `snapshot`, if given; the name is a validated id) into a new file. Without `-U`: a source a running VM writes to is refused (its lock is held), not copied torn. */
  async convert(from: string, fromFormat: ImgFormat, to: string, toFormat: "qcow2" | "raw", snapshot?: string): Promise<void> {
    const at = snapshot === undefined ? [] : ["-l", `snapshot.name=${snapshot}`];
    await run(this.#binary, ["convert", "-q", "-f", fromFormat, ...at, "-O", toFormat, absolute(from), absolute(to)], this.#timeoutMs);
  }

  /**
   * An internal snapshot operation on a qcow2 image (offline: it takes the image's lock).
   * `qemu-img snapshot` has no `-f`, so the format is named through `--image-opts`
   * (commas in the path doubled, as QEMU's option syntax escapes them).
   */
  async snapshot(path: string, op: "create" | "apply" | "delete", tag: string): Promise<void> {
    const flag = { create: "-c", apply: "-a", delete: "-d" }[op];
    await run(this.#binary, ["snapshot", "-q", "--image-opts", flag, tag, `driver=qcow2,file.driver=file,file.filename=${absolute(path).replaceAll(",", ",,")}`], this.#timeoutMs);
  }

  /** Sets the virtual size offline; `shrink` allows a smaller size. */
  async resize(path: string, format: ImgFormat, size: bigint, shrink: boolean): Promise<void> {
    await run(this.#binary, ["resize", "-q", "-f", format, ...(shrink ? ["--shrink"] : []), absolute(path), String(size)], this.#timeoutMs);
  }
}

/** Paths handed to qemu-img are absolute, so none can be read as an option. */
function absolute(path: string): string {
  if (!path.startsWith("/")) throw new QuantixError("internal", "qemu-img is only given absolute paths");
  return path;
}

function run(binary: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: MAX_OUTPUT_BYTES, encoding: "utf8", env: { ...process.env, LC_ALL: "C" } }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const name = basename(binary === "prlimit" ? (args.find((a) => !a.startsWith("--")) ?? binary) : binary);
      const op = args.find((a) => ["info", "create", "convert", "resize", "snapshot"].includes(a));
      reject(failure(op === undefined ? name : `${name} ${op}`, err, stderr));
    });
  });
}

/** qemu-img's complaint as a QuantixError: a held lock is FAILED_PRECONDITION, the rest INTERNAL. */
function failure(what: string, err: ExecFileException, stderr: string): QuantixError {
  if (err.code === "ENOENT") return new QuantixError("failed_precondition", `${what.split(" ")[0]} is not installed on this host`, [], { cause: err });
  if (err.killed) return new QuantixError("deadline_exceeded", `${what} took too long and was stopped`, [], { cause: err });
  const said = stderr
    .replace(/\/[^\s'",:]*\/([^\s'",:/]+)/g, "$1")
    .trim()
    .slice(0, MAX_MESSAGE_CHARS);
  if (/Failed to get .*lock/.test(stderr)) return new QuantixError("failed_precondition", `the image is in use by another process (a running VM?): ${said}`, [], { cause: err });
  return new QuantixError("internal", `${what} failed: ${said || err.message}`, [], { cause: err });
}
