import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { Backend } from "../backend.js";
import { backendContract, type OpenedBackend } from "../backends/backend.contract.js";
import { isVmmFor, signalVmm } from "../backends/rest-vmm/vmm-process.js";
import type { VmmFlavor } from "./api-spec.js";
import { VIOLATIONS_DIR_ENV, type Violation } from "./stand-in-server.js";

/** Options every REST VMM backend factory takes. */
type Factory = (options: { binary: string; stateDir: string }) => Backend;

/** The stand-in's executable for `flavor`, used as the backend's binary. */
export function standInBinary(flavor: VmmFlavor): string {
  return new URL(`./stand-in-${flavor}`, import.meta.url).pathname;
}

/**
 * Collects the violations of every stand-in started by this test process: it sets
 * $QUANTIX_STANDIN_VIOLATIONS_DIR (inherited by the VMM processes), so the record
 * survives deleteVM removing the VM's directory.
 */
export function violationLog(): { readonly dir: string; read(): Violation[]; assertNone(): void } {
  const dir = mkdtempSync("/tmp/qx-viol-");
  process.env[VIOLATIONS_DIR_ENV] = dir;
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const read = (): Violation[] =>
    readdirSync(dir).flatMap((f) => readFileSync(join(dir, f), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Violation));
  return { dir, read, assertNone: () => assert.deepEqual(read(), [], "the stand-in VMM recorded spec violations") };
}

/** Opens `factory`'s backend on a fresh short state dir with the stand-in as its binary, and a bootable config. */
export function openWithStandIn(flavor: VmmFlavor, factory: Factory): () => Promise<OpenedBackend & { readonly stateDir: string }> {
  return async () => {
    // Short, because the per-VM API socket path must fit in 107 bytes.
    const stateDir = mkdtempSync(`/tmp/qx-${flavor === "firecracker" ? "fc" : "ch"}-`);
    const images = join(stateDir, "images");
    mkdirSync(images);
    writeFileSync(join(images, "vmlinux"), "not a kernel: the stand-in does not run it");
    writeFileSync(join(images, "root.img"), Buffer.alloc(4096));
    const options = { binary: standInBinary(flavor), stateDir };
    const opened: Backend[] = [factory(options)];
    const config = create(VmConfigSchema, {
      cpu: { vcpuCount: 2 },
      memory: { sizeBytes: 256n * 1024n * 1024n },
      boot: { kernelPath: join(images, "vmlinux"), kernelArgs: "console=ttyS0 reboot=k panic=1" },
      storage: [{ id: "root", path: join(images, "root.img"), isRootDevice: true }],
      network: [{ id: "eth0", macAddress: "52:54:00:12:34:56", tapDevice: "qxtap0" }],
      console: { enabled: true },
    });
    return {
      stateDir,
      backend: opened[0],
      config,
      reopen: async () => {
        const b = factory(options);
        opened.push(b);
        return b;
      },
      cleanup: async () => {
        for (const b of opened) await b.close();
        killLeftovers(stateDir);
        rmSync(stateDir, { recursive: true, force: true });
      },
    };
  };
}

/** Kills any VMM a failed test left running, checking each pid really serves that VM's socket. */
function killLeftovers(stateDir: string): void {
  const vms = join(stateDir, "vms");
  const dirs = (() => {
    try {
      return readdirSync(vms, { withFileTypes: true });
    } catch {
      return [];
    }
  })();
  for (const id of dirs.filter((d) => d.isDirectory()).map((d) => d.name)) {
    try {
      const pid = Number(readFileSync(join(vms, id, "vmm.pid"), "utf8"));
      if (isVmmFor(pid, join(vms, id, "api.sock"))) signalVmm(pid, "SIGKILL");
    } catch {
      // No pid file: no process was left.
    }
  }
}

/**
 * Runs the backend contract against `factory`'s backend with the stand-in VMM of `flavor`,
 * failing each case in which the stand-in recorded a spec violation.
 */
export function standInContract(flavor: VmmFlavor, factory: Factory): void {
  const violations = violationLog();
  const open = openWithStandIn(flavor, factory);
  let stateDir = "";
  const track = async (): Promise<OpenedBackend> => {
    const opened = await open();
    stateDir = opened.stateDir;
    return opened;
  };
  backendContract(flavor, track, { vmDir: (vmId) => join(stateDir, "vms", vmId), afterEach: () => violations.assertNone() });
}
