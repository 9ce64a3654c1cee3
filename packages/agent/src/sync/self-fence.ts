import { readFile } from "node:fs/promises";
import { replacePrivateFile } from "../private-file.js";
import { join } from "node:path";
import { HA_METADATA_KEY } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import type { Backend, BackendVmInfo, BackendVmState } from "../backend.js";
import type { VmManager } from "../vm-manager.js";

/** The agent's VMs as self-fencing sees them: list them, power one off (through the VM manager). */
export interface FenceTarget {
  list(): Promise<readonly BackendVmInfo[]>;
  powerOff(vmId: string): Promise<void>;
  /** Deletes the host's routers (their external addresses move to another node); returns their ids. */
  dropRouters?(): Promise<string[]>;
}

/** The fence target of an agent: its backend's VMs, powered off through its VM manager (which serialises per VM). */
export function fenceTargetOf(manager: VmManager, backend: Backend, routers?: { dropAll(): Promise<string[]> }): FenceTarget {
  return {
    list: () => backend.listVMs(),
    powerOff: async (vmId) => {
      await manager.shutdown(vmId, true, 0);
    },
    ...(routers ? { dropRouters: () => routers.dropAll() } : {}),
  };
}

/** States in which a VM's guest may still be writing to its disks. */
const LIVE: readonly BackendVmState[] = ["running", "paused"];

/**
 * How long after its last answered heartbeat an agent powers off its HA VMs: the control
 * plane's lost-after time minus a margin (a fifth of it, at least one second, at most
 * half). The control plane counts from when it received that heartbeat, which is before
 * the agent saw the answer, and marks the node OFFLINE only at a node-monitor check at
 * or after lost-after; HA restarts after that, plus any restart delay. The margin covers
 * the agent's check interval and the power-off itself, so the old copy is off first.
 */
export function selfFenceAfterMs(lostAfterSec: number): number {
  const lostMs = lostAfterSec * 1000;
  const margin = Math.max(Math.min(lostMs / 2, 1000), lostMs / 5);
  return lostMs - margin;
}

/**
 * Whether an agent starting now is past its self-fencing deadline, from what it persisted
 * (`<stateDir>/self-fence.json`): what it must not bring back before it has heard from the
 * control plane (its routers). False when nothing was heard yet.
 */
export async function pastFenceDeadline(stateDir: string, nowMs = Date.now()): Promise<boolean> {
  try {
    const p = JSON.parse(await readFile(join(stateDir, "self-fence.json"), "utf8")) as Partial<Persisted>;
    if (typeof p.lostAfterSec !== "number" || typeof p.lastAnsweredMs !== "number" || p.lostAfterSec <= 0 || p.lastAnsweredMs === 0) return false;
    return nowMs - p.lastAnsweredMs >= selfFenceAfterMs(p.lostAfterSec);
  } catch {
    return false;
  }
}

/** What is kept in the state dir, so an agent restarted while cut off still fences in time. */
interface Persisted {
  readonly lostAfterSec: number;
  readonly lastAnsweredMs: number;
}

/**
 * Agent-side fencing: every `checkMs`, if the control plane named a lost-after time and
 * has not answered a heartbeat for `selfFenceAfterMs` of it, every live VM whose
 * metadata carries HA_METADATA_KEY is powered off (each logged), and the host's routers
 * are deleted (the control plane places them on another network node). VMs without an HA
 * policy keep running: the control plane never restarts them elsewhere. Once heartbeats
 * are answered again, the control plane's reconciler decides what runs.
 */
export class SelfFence {
  private lostAfterSec = 0;
  private lastAnsweredMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private readonly file: string;

  constructor(private readonly o: { target: FenceTarget; stateDir: string; log: Logger; checkMs?: number; now?: () => number }) {
    this.file = join(o.stateDir, "self-fence.json");
  }

  /** Loads what an earlier run of the agent last heard, then checks periodically. */
  async start(): Promise<void> {
    const text = await readFile(this.file, "utf8").catch(() => "");
    try {
      const p = JSON.parse(text) as Partial<Persisted>;
      if (typeof p.lostAfterSec === "number" && typeof p.lastAnsweredMs === "number") {
        this.lostAfterSec = p.lostAfterSec;
        this.lastAnsweredMs = p.lastAnsweredMs;
      }
    } catch {
      // Nothing heard yet (or an unreadable file): no deadline until the first answer.
    }
    this.timer = setInterval(() => void this.check(), this.o.checkMs ?? 1000);
    this.timer.unref();
    // An agent restarted after its deadline (it died, or was cut off) fences at once.
    await this.check();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** A heartbeat was answered; `lostAfterSec` is the control plane's (0: not told). */
  async answered(lostAfterSec: number): Promise<void> {
    this.lostAfterSec = lostAfterSec;
    this.lastAnsweredMs = this.now();
    const p: Persisted = { lostAfterSec, lastAnsweredMs: this.lastAnsweredMs };
    await replacePrivateFile(this.file, JSON.stringify(p));
  }

  /** Powers off the HA VMs if the deadline has passed; returns the ids powered off. */
  async check(): Promise<string[]> {
    if (this.lostAfterSec <= 0 || this.lastAnsweredMs === 0) return [];
    const silentMs = this.now() - this.lastAnsweredMs;
    if (silentMs < selfFenceAfterMs(this.lostAfterSec) || this.checking) return [];
    this.checking = true;
    const off: string[] = [];
    try {
      for (const vm of await this.o.target.list()) {
        if (vm.config.metadata[HA_METADATA_KEY] !== "1" || !LIVE.includes(vm.state)) continue;
        this.o.log.log("warn", "self-fencing: powering off an HA VM, cut off from the control plane for too long", { vm_id: vm.vmId, silent_ms: silentMs, node_lost_after_sec: this.lostAfterSec });
        await this.o.target.powerOff(vm.vmId);
        off.push(vm.vmId);
      }
      const dropped = (await this.o.target.dropRouters?.()) ?? [];
      if (dropped.length > 0) this.o.log.log("warn", "self-fencing: dropped this host's routers, cut off from the control plane for too long (the control plane moves them)", { router_ids: dropped.join(","), silent_ms: silentMs });
    } catch (err) {
      this.o.log.log("error", "self-fencing failed; will retry", { error: String(err) });
    } finally {
      this.checking = false;
    }
    return off;
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }
}
