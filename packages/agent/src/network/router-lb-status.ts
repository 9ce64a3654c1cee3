import type { HostExec } from "./host-exec.js";
import { addressesOf } from "./router-links.js";
import type { Condition } from "./network-host.js";
import type { MemberHealthView } from "./router-lb-health.js";
import { lbCounterNames, lbMemberKey, OWNED_LB_COUNTER, routerInterfaceName, type LbProtocol, type RouterDesired } from "./router-model.js";
import { ROUTER_TABLE } from "./router-ruleset.js";

/** A named counter's values. */
export interface CounterValue {
  readonly packets: bigint;
  readonly bytes: bigint;
}

/** A member as observed. */
export interface LbMemberView {
  readonly memberId: string;
  readonly address: string;
  readonly port: number;
  readonly healthy: boolean;
  readonly healthReason: string;
  readonly connections: bigint;
  readonly packets: bigint;
  readonly bytes: bigint;
}

/** A listener as observed. */
export interface LbListenerView {
  readonly protocol: LbProtocol;
  readonly port: number;
  readonly healthyMembers: number;
  readonly connections: bigint;
  readonly packets: bigint;
  readonly bytes: bigint;
  readonly members: readonly LbMemberView[];
}

/** A load balancer as observed. */
export interface LoadBalancerView {
  readonly loadBalancerId: string;
  readonly vip: string;
  readonly applied: boolean;
  readonly listeners: readonly LbListenerView[];
}

/** The load balancer counters of the router's table (empty when it has none or no table). */
export async function readLbCounters(rt: HostExec): Promise<Map<string, CounterValue>> {
  const out = JSON.parse(await rt.inNs("nft", ["-j", "list", "counters", "table", "ip", ROUTER_TABLE])) as { nftables: { counter?: { name: string; packets: number; bytes: number } }[] };
  return new Map(out.nftables.flatMap((x) => (x.counter && OWNED_LB_COUNTER.test(x.counter.name) ? [[x.counter.name, { packets: BigInt(x.counter.packets), bytes: BigInt(x.counter.bytes) }] as const] : [])));
}

/** The load balancers' views (pure): the spec, the members' health, the counters, whether each VIP is applied. */
export function lbViews(r: RouterDesired, health: (memberKey: string) => MemberHealthView | undefined, counters: ReadonlyMap<string, CounterValue>, vipApplied: (lbId: string) => boolean): LoadBalancerView[] {
  const zero: CounterValue = { packets: 0n, bytes: 0n };
  return r.loadBalancers.map((lb) => ({
    loadBalancerId: lb.loadBalancerId,
    vip: lb.vip,
    applied: vipApplied(lb.loadBalancerId),
    listeners: lb.listeners.map((l) => {
      const members = l.members.map((m): LbMemberView => {
        const h = health(lbMemberKey(lb.loadBalancerId, l, m.memberId));
        const c = lbCounterNames(lb.loadBalancerId, l, m.memberId);
        const t = counters.get(c.traffic) ?? zero;
        return { memberId: m.memberId, address: m.address, port: m.port, healthy: h?.healthy ?? true, healthReason: h?.reason ?? "NoHealthCheck", connections: (counters.get(c.connections) ?? zero).packets, packets: t.packets, bytes: t.bytes };
      });
      const sum = (f: (m: LbMemberView) => bigint) => members.reduce((a, m) => a + f(m), 0n);
      return { protocol: l.protocol, port: l.port, healthyMembers: members.filter((m) => m.healthy).length, connections: sum((m) => m.connections), packets: sum((m) => m.packets), bytes: sum((m) => m.bytes), members };
    }),
  }));
}

/**
 * Observes the router's load balancers now: counters from the table (when `nat`: the table
 * applied), whether each VIP is on its interface (`external`: qre's addresses).
 */
export async function observeLoadBalancers(r: RouterDesired, rt: HostExec, seen: { nsUp: boolean; nat: boolean; external: ReadonlySet<string> }, health: (memberKey: string) => MemberHealthView | undefined): Promise<LoadBalancerView[]> {
  if (r.loadBalancers.length === 0) return [];
  const counters = seen.nat ? await readLbCounters(rt).catch(() => new Map<string, CounterValue>()) : new Map<string, CounterValue>();
  const onItf = new Map<string, ReadonlySet<string>>([["", seen.external]]);
  for (const lb of r.loadBalancers) {
    const id = lb.networkId ?? "";
    if (!onItf.has(id)) onItf.set(id, seen.nsUp ? await addressesOf(rt, routerInterfaceName(id)).catch(() => new Set<string>()) : new Set<string>());
  }
  const byId = new Map(r.loadBalancers.map((lb) => [lb.loadBalancerId, lb]));
  return lbViews(r, health, counters, (id) => {
    const lb = byId.get(id)!;
    return seen.nat && onItf.get(lb.networkId ?? "")!.has(`${lb.vip}/32`);
  });
}

/** The "LoadBalancersReady" condition (undefined without load balancers). */
export function lbCondition(views: readonly LoadBalancerView[]): Condition | undefined {
  if (views.length === 0) return undefined;
  const type = "LoadBalancersReady";
  const unapplied = views.filter((v) => !v.applied);
  if (unapplied.length > 0) return { type, status: false, reason: "NotApplied", message: `load balancers not in effect (VIP or table missing): ${unapplied.map((v) => `${v.loadBalancerId} (${v.vip})`).join(", ")}` };
  const empty = views.flatMap((v) => v.listeners.filter((l) => l.healthyMembers === 0).map((l) => `${v.loadBalancerId} ${l.protocol.toUpperCase()} ${v.vip}:${l.port}`));
  if (empty.length > 0) return { type, status: false, reason: "NoHealthyMembers", message: `listeners without a healthy member refuse connections: ${empty.join(", ")}` };
  const n = views.reduce((a, v) => a + v.listeners.length, 0);
  return { type, status: true, reason: "Applied", message: `${views.length} load balancers, ${n} listeners, each with a healthy member` };
}
