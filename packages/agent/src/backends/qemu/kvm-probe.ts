import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** What {@link probeKvm} found: whether QEMU can run a vCPU under KVM here, and if not why. */
export type KvmProbeResult = { readonly usable: true } | { readonly usable: false; readonly reason: string };

// The isa-debug-exit device turns a write of v to its port into QEMU exiting with 2v+1.
const EXIT_PORT = 0xf4;
const EXPECTED_EXIT = 3;

/**
 * A 64 KiB "BIOS" whose reset vector (0xFFFF0, 16 bytes from the end) runs
 * `mov al, 1; out 0xf4, al; hlt`: the smallest guest that proves a vCPU really ran.
 */
function probeFirmware(): Uint8Array {
  const image = new Uint8Array(64 * 1024).fill(0xf4); // hlt everywhere else
  image.set([0xb0, 0x01, 0xe6, EXIT_PORT, 0xf4], image.length - 16);
  return image;
}

/**
 * Runs one vCPU under KVM for a few instructions, with the CPU model the QEMU backend
 * uses with KVM (`-cpu host`). Opening /dev/kvm is not enough: on hosts with a
 * paravirtualised /dev/kvm QEMU opens it, then aborts when it first loads the vCPU's
 * MSRs. This costs about 50 ms, so the backend can run it once at start and report the
 * result in its ping (GET /_/health) rather than fail every BootVm later.
 */
export async function probeKvm(binary: string, timeoutMs = 10_000): Promise<KvmProbeResult> {
  const dir = await mkdtemp(join(tmpdir(), "quantix-kvm-probe-"));
  try {
    const firmware = join(dir, "probe.bin");
    await writeFile(firmware, probeFirmware());
    const args = ["-accel", "kvm", "-cpu", "host", "-machine", "pc", "-nodefaults", "-display", "none", "-m", "16",
      "-bios", firmware, "-device", `isa-debug-exit,iobase=${EXIT_PORT},iosize=4`];
    const outcome = await new Promise<{ code: number | null; signal: string | null; timedOut: boolean; output: string }>((resolve) => {
      execFile(binary, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; signal?: NodeJS.Signals | null; killed?: boolean }) | null;
        resolve({ code: e ? (typeof e.code === "number" ? e.code : null) : 0, signal: e?.signal ?? null, timedOut: e?.killed === true, output: `${stdout}${stderr}` });
      });
    });
    if (outcome.code === EXPECTED_EXIT) return { usable: true };
    // The last line QEMU printed says why (e.g. "Assertion ... kvm_buf_set_msrs ... failed").
    const said = outcome.output.trim().split("\n").filter((l) => !l.includes("warning:")).pop() ?? "";
    const how = outcome.timedOut ? `did not finish in ${timeoutMs} ms` : outcome.signal ? `was killed by ${outcome.signal}` : `exited with ${outcome.code ?? "an error"}`;
    return { usable: false, reason: `a test vCPU under KVM ${how}${said ? `: ${said}` : ""}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
