import net from "node:net";
import { readFile } from "node:fs/promises";
import { QuantixError } from "@quantix/core";
import type { ConsoleRing } from "../../console-ring.js";
import { QmpClient } from "./qmp-client.js";
import { isProcessAlive } from "../../process-state.js";
import { killHard, spawnQemu, type QemuExit } from "./qemu-process.js";
import { clearRuntimeFiles, type VmPaths } from "./qemu-vm-dir.js";

/**
 * One running QEMU as the agent holds it: the process, its QMP connection and the
 * console socket copied into the VM's ring. Reports the process's end exactly once,
 * with whether the guest asked to power off (QMP SHUTDOWN with guest=true) first.
 */

/** How a QEMU ended: the exit status when it was our child, and who asked for it. */
export interface RuntimeEnd {
  readonly exit: QemuExit | undefined;
  readonly guestShutdown: boolean;
}

/** Options shared by {@link QemuRuntime.start} and {@link QemuRuntime.adopt}. */
export interface RuntimeOptions {
  readonly paths: VmPaths;
  readonly ring: ConsoleRing;
  /** Whether QEMU serves the console on paths.consoleSocket (console enabled, BUFFER). */
  readonly consoleSocket: boolean;
  readonly onEnd: (end: RuntimeEnd) => void;
}

const CONNECT_TIMEOUT_MS = 15_000;

/** A live QEMU process attached to the agent. */
export class QemuRuntime {
  /** Whether the vCPUs are stopped (QMP STOP/RESUME). */
  paused = false;
  private guestShutdown = false;
  private detached = false;
  private hasEnded = false;
  private console: net.Socket | undefined;
  private resolveEnded: (end: RuntimeEnd) => void = () => {};
  /** Resolves once the process has ended (never after {@link detach}). */
  readonly ended = new Promise<RuntimeEnd>((resolve) => (this.resolveEnded = resolve));

  private constructor(readonly pid: number, readonly qmp: QmpClient, private readonly options: RuntimeOptions) {
    qmp.onEvent((e) => {
      if (e.event === "SHUTDOWN" && e.data?.["guest"] === true) this.guestShutdown = true;
      if (e.event === "STOP") this.paused = true;
      if (e.event === "RESUME") this.paused = false;
    });
  }

  /**
   * Spawns QEMU paused (inheriting `inherit` as its fds 3, 4, ...), attaches QMP and the
   * console, then lets the guest run. With `cont` false (a QEMU started without -S to
   * receive an incoming migration) no "cont" is sent: QEMU starts the guest itself once
   * the state has arrived, after taking over the disks from the source. `spawned` runs
   * from the moment QEMU is spawned, alongside the rest; start resolves after both.
   */
  static async start(binary: string, args: readonly string[], options: RuntimeOptions, inherit: readonly number[] = [], cont = true, spawned?: () => Promise<void>): Promise<QemuRuntime> {
    await clearRuntimeFiles(options.paths);
    const child = await spawnQemu(binary, args, options.paths.logFile, inherit).catch((err: unknown) => {
      throw new QuantixError("unavailable", `cannot start QEMU (${binary}): ${String(err)}; install qemu-system-x86`);
    });
    // `spawned` (the agent saving its record) runs while QEMU initialises, not after "cont";
    // start answers only once it is done, and a failure waits for it before throwing.
    const recorded = spawned ? spawned() : Promise.resolve();
    const settled = recorded.then(() => undefined, () => undefined);
    const early = child.exited.then(async (exit) => {
      const log = await readFile(options.paths.logFile, "utf8").catch(() => "");
      throw new QuantixError("failed_precondition", `QEMU exited at start (${exit.signal ?? `code ${exit.code}`}): ${log.trim().split("\n").slice(-3).join(" / ")}`);
    });
    let qmp: QmpClient;
    try {
      qmp = await Promise.race([QmpClient.connect(options.paths.qmpSocket, { timeoutMs: CONNECT_TIMEOUT_MS }), early]);
    } catch (err) {
      // QEMU that exits at start (a disk image it cannot open, or whose lock another QEMU
      // holds) may close QMP under the handshake before its exit is seen: its log says why.
      const why = await Promise.race([early.then(() => undefined, (e: unknown) => e), new Promise((r) => setTimeout(r, 5000, undefined))]);
      killHard(child.pid);
      await settled;
      throw why ?? err;
    }
    early.catch(() => {});
    const runtime = new QemuRuntime(child.pid, qmp, options);
    void child.exited.then((exit) => runtime.end(exit));
    try {
      await runtime.attachConsole();
      if (cont) await qmp.execute("cont");
    } catch (err) {
      // QEMU dying at the first vCPU run closes QMP under "cont": its log says why.
      const why = await Promise.race([early.then(() => undefined, (e: unknown) => e), new Promise((r) => setTimeout(r, 5000, undefined))]);
      killHard(child.pid);
      await settled;
      throw why ?? err;
    }
    try {
      await recorded;
    } catch (err) {
      killHard(child.pid);
      throw err;
    }
    return runtime;
  }

  /** Re-attaches to a QEMU an earlier agent started; its end is seen via QMP closing. */
  static async adopt(pid: number, options: RuntimeOptions): Promise<QemuRuntime> {
    const qmp = await QmpClient.connect(options.paths.qmpSocket, { timeoutMs: 5_000 });
    const runtime = new QemuRuntime(pid, qmp, options);
    const status = await qmp.execute<{ running: boolean; status: string }>("query-status");
    runtime.paused = !status.running;
    // Not our child: no exit status. QMP closes when QEMU exits; then wait for the pid to go.
    void qmp.closed.then(async () => {
      while (!runtime.detached && isProcessAlive(pid)) await new Promise((r) => setTimeout(r, 100));
      runtime.end(undefined);
    });
    await runtime.attachConsole();
    return runtime;
  }

  /**
   * Writes console input to QEMU's chardev socket; resolves once the socket has taken it
   * (a full socket buffer, e.g. a guest that stopped reading, holds the caller back).
   */
  writeConsole(data: Uint8Array): Promise<void> {
    const socket = this.console;
    if (!socket || socket.destroyed) return Promise.reject(new QuantixError("failed_precondition", "the VM's console is not connected (its console output is not BUFFER, or QEMU is exiting)"));
    return new Promise((resolve, reject) => {
      socket.write(data, (err) => (err ? reject(new QuantixError("unavailable", `writing to the QEMU console socket failed: ${err.message}`)) : resolve()));
    });
  }

  /** Releases the sockets and stops reporting; QEMU keeps running (agent shutdown). */
  detach(): void {
    this.detached = true;
    this.console?.destroy();
    this.qmp.close();
  }

  private end(exit: QemuExit | undefined): void {
    if (this.hasEnded || this.detached) return;
    this.hasEnded = true;
    this.console?.destroy();
    this.qmp.close();
    const end = { exit, guestShutdown: this.guestShutdown };
    this.options.onEnd(end);
    this.resolveEnded(end);
  }

  /**
   * Connects to QEMU's console socket and copies it into the ring. Output written while
   * no agent is connected is dropped by QEMU (a server socket without a client discards
   * writes), so the guest never blocks on an absent agent.
   */
  private async attachConsole(): Promise<void> {
    if (!this.options.consoleSocket) return;
    const deadline = Date.now() + CONNECT_TIMEOUT_MS;
    for (;;) {
      try {
        this.console = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(this.options.paths.consoleSocket);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new QuantixError("unavailable", `cannot connect to the QEMU console socket: ${String(err)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    this.console.on("error", () => {});
    this.console.on("data", (chunk: Buffer) => this.options.ring.append(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
  }
}
