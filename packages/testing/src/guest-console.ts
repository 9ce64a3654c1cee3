import { create } from "@bufbuild/protobuf";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { GUEST_TICK, type TestGuest } from "./guest.js";
import { until } from "./until.js";

/** A backend whose serial console can be read (the agent's Backend.consoleTail). */
export interface ConsoleReader {
  consoleTail(vmId: string, tailBytes: number): Promise<Uint8Array>;
}

/** A vmm.v1 VmConfig that boots the test guest directly: one vCPU, `memoryMib` of RAM, then `extra`. */
export function guestVmConfig(guest: TestGuest, memoryMib: number, extra: Partial<VmConfig> = {}): VmConfig {
  const config = create(VmConfigSchema, {
    cpu: { vcpuCount: 1 },
    memory: { sizeBytes: BigInt(memoryMib) * 1048576n },
    boot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, kernelArgs: guest.kernelArgs },
  });
  return Object.assign(config, extra);
}

/** The guest's console so far (its last MiB), as text. */
export async function consoleText(b: ConsoleReader, vmId: string): Promise<string> {
  return new TextDecoder().decode(await b.consoleTail(vmId, 1 << 20));
}

/** The counter values the guest printed so far, in order. */
export async function guestTicks(b: ConsoleReader, vmId: string): Promise<number[]> {
  return [...(await consoleText(b, vmId)).matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1]));
}

/** The highest counter line printed so far (0 before the first). */
export async function lastTick(b: ConsoleReader, vmId: string): Promise<number> {
  return Math.max(0, ...(await guestTicks(b, vmId)));
}

/** Waits up to `timeoutMs` until the guest prints a counter value above `n`. */
export function ticksPast(b: ConsoleReader, vmId: string, n: number, what: string, timeoutMs: number): Promise<true> {
  return until(async () => ((await lastTick(b, vmId)) > n ? true : undefined), what, timeoutMs, 100);
}
