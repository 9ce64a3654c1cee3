import type { Prober } from "./router-lb-probe.js";
import { lbMemberKey, type RouterDesired } from "./router-model.js";

/**
 * The load balancers' health checks: one timer per checked member, a check every
 * interval (through a Prober, from inside the router's namespace), rise/fall thresholds.
 * A member starts in (reason "NotCheckedYet") and is checked at once; a member never seen
 * healthy goes out at its first failure; then `fall` consecutive failures take it out and
 * `rise` consecutive successes bring it back. Each change calls `changed(routerId)` (the
 * router host re-renders that router's table). `sync` takes the spec (new members are in
 * until checked), `start` begins their checks once the namespace exists. State lives in memory: after an agent
 * restart every member starts again as new.
 */

/** Runs `fn` after `ms`; returns how to cancel it. */
export type Schedule = (fn: () => void, ms: number) => () => void;

const timers: Schedule = (fn, ms) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
};

/** A member's health as last decided. */
export interface MemberHealthView {
  readonly healthy: boolean;
  readonly reason: string;
}

interface Target {
  readonly routerId: string;
  readonly address: string;
  readonly port: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
}

interface Tracked {
  target: Target;
  /** What identifies the check: a change of it starts the member over. */
  readonly sig: string;
  healthy: boolean;
  checked: boolean;
  reason: string;
  streak: number;
  cancel: (() => void) | undefined;
  stopped: boolean;
}

/** The health checker of a router host. */
export class LbHealth {
  private readonly tracked = new Map<string, Tracked>();

  constructor(
    private readonly prober: Prober,
    private readonly changed: (routerId: string) => void,
    private readonly schedule_: Schedule = timers,
  ) {}

  /** Makes the checked members of `routerId` those of `r` (undefined: the router is gone). */
  sync(routerId: string, r: RouterDesired | undefined): void {
    const want = new Map<string, Target>();
    for (const lb of r?.loadBalancers ?? []) {
      for (const l of lb.listeners) {
        const h = l.healthCheck;
        if (!h) continue;
        for (const m of l.members) {
          const key = `${routerId}/${lbMemberKey(lb.loadBalancerId, l, m.memberId)}`;
          want.set(key, { routerId, address: m.address, port: h.port || m.port, intervalMs: h.intervalSeconds * 1000, timeoutMs: h.timeoutSeconds * 1000, rise: h.rise, fall: h.fall });
        }
      }
    }
    for (const [key, t] of this.tracked) {
      if (t.target.routerId !== routerId) continue;
      const w = want.get(key);
      if (!w || signature(w) !== t.sig) this.drop(key);
    }
    for (const [key, target] of want) {
      if (this.tracked.has(key)) continue;
      const t: Tracked = { target, sig: signature(target), healthy: true, checked: false, reason: "NotCheckedYet", streak: 0, cancel: undefined, stopped: false };
      this.tracked.set(key, t);
    }
    if (![...this.tracked.values()].some((t) => t.target.routerId === routerId)) this.prober.stop(routerId);
  }

  /** Starts the router's new members' first checks (once its namespace exists). */
  start(routerId: string): void {
    for (const [key, t] of this.tracked) if (t.target.routerId === routerId && !t.cancel) this.schedule(key, t, 0);
  }

  /** A member's health: undefined when it has no health check (always in). */
  view(routerId: string, memberKey: string): MemberHealthView | undefined {
    const t = this.tracked.get(`${routerId}/${memberKey}`);
    return t ? { healthy: t.healthy, reason: t.reason } : undefined;
  }

  /** Whether a member is in its map (no health check: always). */
  healthy(routerId: string, memberKey: string): boolean {
    return this.tracked.get(`${routerId}/${memberKey}`)?.healthy ?? true;
  }

  close(): void {
    for (const key of [...this.tracked.keys()]) this.drop(key);
    this.prober.close();
  }

  private drop(key: string): void {
    const t = this.tracked.get(key);
    if (!t) return;
    t.stopped = true;
    t.cancel?.();
    this.tracked.delete(key);
  }

  private schedule(key: string, t: Tracked, ms: number): void {
    t.cancel = this.schedule_(() => void this.check(key, t), ms);
  }

  private async check(key: string, t: Tracked): Promise<void> {
    const { routerId, address, port, timeoutMs, rise, fall } = t.target;
    const r = await this.prober.probe(routerId, address, port, timeoutMs);
    if (t.stopped) return;
    if (r.inconclusive) {
      t.reason = `${t.checked ? "" : "NotCheckedYet: "}the check could not run: ${r.reason}`;
      this.schedule(key, t, t.target.intervalMs);
      return;
    }
    const was = t.healthy;
    if (r.ok === t.healthy) {
      t.streak = 0;
      t.reason = `${r.reason}`;
    } else {
      t.streak += 1;
      const need = t.healthy ? (t.checked ? fall : 1) : rise;
      if (t.streak >= need) {
        t.healthy = r.ok;
        t.streak = 0;
        t.reason = r.reason;
      } else t.reason = `${r.reason} (${t.streak}/${need} to ${t.healthy ? "fall" : "rise"})`;
    }
    t.checked = true;
    if (was !== t.healthy) this.changed(routerId);
    this.schedule(key, t, t.target.intervalMs);
  }
}

const signature = (t: Target): string => `${t.address}:${t.port}/${t.intervalMs}/${t.timeoutMs}/${t.rise}/${t.fall}`;
