import { createHash } from "node:crypto";
import { lbCounterNames, lbMemberKey, type LbListenerDesired, type LbMemberDesired, type LoadBalancerDesired } from "./router-model.js";

/**
 * A router's load balancers as nft rule lines (pure), part of the router's one table:
 *
 * - prerouting, per listener with a healthy member: `ip daddr <vip> <proto> dport <port>
 *   dnat ip to <selector> mod <W> map { <slots> : <member> . <port>, ... }` where W is the
 *   healthy members' total weight and each member takes `weight` consecutive slots
 *   (an interval). The selector is `numgen inc` (round robin), `jhash ip saddr` or
 *   `jhash ip saddr . <proto> sport` with a seed from the load balancer id (affinity
 *   stable across re-renders). No healthy member: no rule (the VIP, a local address of
 *   the router, refuses the connection).
 * - forward (filter), per member: a named counter of new connections and one of the
 *   packets and bytes of its connections, matched on the conntrack tuple (original
 *   destination the VIP and port, reply source the member and its port), so both
 *   directions count. Named counters survive the table's re-render (see router-ruleset.ts).
 *
 * Hairpin (a client inside the router's subnets) is the router's existing rule:
 * a DNATed connection from an internal subnet leaving by an internal interface is
 * masqueraded.
 */

/** Whether a member is in its listener's map now. */
export type MemberHealth = (key: string) => boolean;

/** The seed of a load balancer's jhash: 32 bits of the SHA-256 of its id. */
export const lbSeed = (lbId: string): string => `0x${createHash("sha256").update(`lb/${lbId}`).digest("hex").slice(0, 8)}`;

/** The members in the map, with their slot intervals. */
export function lbSlots(members: readonly LbMemberDesired[]): { member: LbMemberDesired; from: number; to: number }[] {
  let at = 0;
  return members.map((member) => {
    const from = at;
    at += member.weight;
    return { member, from, to: at - 1 };
  });
}

function dnatRule(lb: LoadBalancerDesired, l: LbListenerDesired, healthy: readonly LbMemberDesired[]): string | undefined {
  if (healthy.length === 0) return undefined;
  const slots = lbSlots(healthy);
  const total = slots[slots.length - 1]!.to + 1;
  const selector = l.algorithm === "round_robin" ? "numgen inc" : l.algorithm === "source_ip" ? "jhash ip saddr" : `jhash ip saddr . ${l.protocol} sport`;
  const seed = l.algorithm === "round_robin" ? "" : ` seed ${lbSeed(lb.loadBalancerId)}`;
  const map = slots.map((s) => `${s.from === s.to ? s.from : `${s.from}-${s.to}`} : ${s.member.address} . ${s.member.port}`).join(", ");
  return `    ip daddr ${lb.vip} ${l.protocol} dport ${l.port} dnat ip to ${selector} mod ${total}${seed} map { ${map} }`;
}

/** The prerouting DNAT lines of every listener (over its healthy members). */
export function lbDnatRules(lbs: readonly LoadBalancerDesired[], healthy: MemberHealth): string[] {
  return lbs.flatMap((lb) => lb.listeners.flatMap((l) => dnatRule(lb, l, l.members.filter((m) => healthy(lbMemberKey(lb.loadBalancerId, l, m.memberId)))) ?? []));
}

/** The counters every member of the spec has (healthy or not). */
export function lbCounters(lbs: readonly LoadBalancerDesired[]): string[] {
  return lbs.flatMap((lb) => lb.listeners.flatMap((l) => l.members.flatMap((m) => Object.values(lbCounterNames(lb.loadBalancerId, l, m.memberId)))));
}

/** The forward-hook counting lines. */
export function lbCountRules(lbs: readonly LoadBalancerDesired[]): string[] {
  if (lbs.length === 0) return [];
  return [
    "    ct original ip daddr != @lb_vips return",
    ...lbs.flatMap((lb) =>
      lb.listeners.flatMap((l) =>
        l.members.flatMap((m) => {
          const c = lbCounterNames(lb.loadBalancerId, l, m.memberId);
          const match = `ct original protocol ${l.protocol} ct original ip daddr ${lb.vip} ct original proto-dst ${l.port} ct reply ip saddr ${m.address} ct reply proto-src ${m.port}`;
          return [`    ${match} ct state new counter name "${c.connections}"`, `    ${match} counter name "${c.traffic}"`];
        }),
      ),
    ),
  ];
}
