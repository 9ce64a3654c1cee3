import type { Clock } from "@quantix/core";
import type { ShutdownOptions } from "../../backend.js";
import { killHard } from "./qemu-process.js";
import type { QemuRuntime } from "./qemu-runtime.js";

/**
 * Ends one QEMU. Graceful: resumes a paused guest (a paused one cannot react), presses
 * the ACPI power button every 2 s (a guest still booting misses a single press), and
 * quits QEMU after the timeout, or at once when `options.signal` aborts (a forced stop
 * preempts). Forced: quits at once. SIGKILL if QEMU outlives quit by 5 s. Resolves once
 * the process has ended.
 */
export async function stopRuntime(rt: QemuRuntime, options: ShutdownOptions, clock: Clock): Promise<void> {
  const signal = options.signal;
  const endedWithin = (ms: number, abortable = false): Promise<boolean> => new Promise((resolve) => {
    const done = (ended: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      resolve(ended);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    if (abortable) signal?.addEventListener("abort", onAbort, { once: true });
    void rt.ended.then(() => done(true));
  });
  if (!options.force && !signal?.aborted) {
    if (rt.paused) await rt.qmp.execute("cont").catch(() => {});
    const deadline = clock.now() + options.timeoutSeconds * 1000;
    let left: number;
    do {
      await rt.qmp.execute("system_powerdown").catch(() => {});
      left = deadline - clock.now();
    } while (left > 0 && !signal?.aborted && !(await endedWithin(Math.min(2000, left), true)));
  }
  if (!(await endedWithin(0))) {
    await rt.qmp.execute("quit").catch(() => {});
    if (!(await endedWithin(5000))) killHard(rt.pid);
  }
  await rt.ended;
}
