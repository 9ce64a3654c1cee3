import { RouterLoadBalancerAlgorithm, RouterLoadBalancerHealthCheckType, RouterLoadBalancerProtocol, type RouterLoadBalancer } from "@quantix/api/gen/vmm/v1/network_pb.js";
import type { Violations } from "@quantix/core";
import { contains4, formatIp4, formatPrefix4, mask4, parseIp4, type Prefix4 } from "./ipv4.js";
import type { LbAlgorithm, LbHealthCheckDesired, LbListenerDesired, LbMemberDesired, LbProtocol, LoadBalancerDesired } from "./router-model.js";
import { ip, uuid } from "./validation.js";

/**
 * Validation of a router's load balancers (pure, part of checkRouterSpec): every
 * violation with its field path; defaults filled in; canonical order (load balancers by
 * id, listeners by protocol and port, members by id).
 */

/** What the rest of the router spec says about addresses. */
export interface LbContext {
  /** The external subnet and the router's address there (undefined when the external side is invalid). */
  readonly external?: { readonly ip: number; readonly subnet: Prefix4 };
  readonly gatewayIp?: string;
  /** The internal interfaces' addresses and subnets. */
  readonly internal: readonly { readonly ip: number; readonly subnet: Prefix4; readonly networkId: string }[];
  /** Floating IP → its field path; fixed IP → its field path. */
  readonly floating: ReadonlyMap<string, string>;
  readonly fixed: ReadonlyMap<string, string>;
}

export const MAX_LOAD_BALANCERS = 64;
export const MAX_LISTENERS = 16;
export const MAX_MEMBERS = 256;

function hostOf(p: Prefix4, x: number): boolean {
  const bcast = (p.net | (~mask4(p.len) >>> 0)) >>> 0;
  return contains4(p, x) && x !== p.net && x !== bcast;
}

const PROTOCOLS: ReadonlyMap<RouterLoadBalancerProtocol, LbProtocol> = new Map([
  [RouterLoadBalancerProtocol.TCP, "tcp"],
  [RouterLoadBalancerProtocol.UDP, "udp"],
]);
const ALGORITHMS: ReadonlyMap<RouterLoadBalancerAlgorithm, LbAlgorithm> = new Map([
  [RouterLoadBalancerAlgorithm.UNSPECIFIED, "round_robin"],
  [RouterLoadBalancerAlgorithm.ROUND_ROBIN, "round_robin"],
  [RouterLoadBalancerAlgorithm.SOURCE_IP, "source_ip"],
  [RouterLoadBalancerAlgorithm.SOURCE_IP_PORT, "source_ip_port"],
]);

function port(v: Violations, field: string, value: number, zeroOk: boolean): boolean {
  if (value === 0 && zeroOk) return true;
  if (value < 1 || value > 65535) {
    v.add(field, value === 0 ? "REQUIRED" : "OUT_OF_RANGE", `must be a port between 1 and 65535, got ${value}`);
    return false;
  }
  return true;
}

function bounded(v: Violations, field: string, value: number, min: number, max: number, dflt: number): number {
  if (value === 0) return dflt;
  v.range(field, value, min, max);
  return value;
}

/** Validates `spec.load_balancers` (under `p`). */
export function checkLoadBalancers(v: Violations, p: string, lbs: readonly RouterLoadBalancer[], ctx: LbContext): LoadBalancerDesired[] {
  if (lbs.length > MAX_LOAD_BALANCERS) v.add(p, "TOO_MANY", `at most ${MAX_LOAD_BALANCERS}, got ${lbs.length}`);
  const ids = new Map<string, string>();
  const vips = new Map<string, string>();
  const out: LoadBalancerDesired[] = [];
  lbs.forEach((lb, i) => {
    const f = `${p}[${i}]`;
    let ok = true;
    if (uuid(v, `${f}.load_balancer_id`, lb.loadBalancerId)) {
      if (ids.has(lb.loadBalancerId)) {
        v.add(`${f}.load_balancer_id`, "DUPLICATE", `is ${ids.get(lb.loadBalancerId)!}'s too`);
        ok = false;
      }
      ids.set(lb.loadBalancerId, f);
    } else ok = false;
    let vip: string | undefined;
    let networkId: string | undefined;
    if (v.required(`${f}.vip`, lb.vip !== "")) vip = ip(v, `${f}.vip`, lb.vip);
    if (vip !== undefined) {
      const n = parseIp4(vip)!;
      const fv = `${f}.vip`;
      const inside = ctx.internal.find((a) => hostOf(a.subnet, n));
      if (ctx.external && hostOf(ctx.external.subnet, n)) {
        if (n === ctx.external.ip || vip === ctx.gatewayIp) v.add(fv, "INVALID_VALUE", "is the router's external address or its gateway");
      } else if (inside) {
        networkId = inside.networkId;
        if (ctx.internal.some((a) => a.ip === n)) v.add(fv, "INVALID_VALUE", "is a router interface's own address");
      } else if (ctx.external || ctx.internal.length > 0) {
        v.add(fv, "OUT_OF_RANGE", `must be a host address of the external subnet${ctx.external ? ` ${formatPrefix4(ctx.external.subnet)}` : ""} or of one of the interfaces' subnets`);
      }
      if (ctx.floating.has(vip)) v.add(fv, "CONFLICT", `is the floating IP of ${ctx.floating.get(vip)!}`);
      if (ctx.fixed.has(vip)) v.add(fv, "CONFLICT", `is the fixed IP of ${ctx.fixed.get(vip)!}`);
      if (vips.has(vip)) v.add(fv, "DUPLICATE", `is the VIP of ${vips.get(vip)!} already`);
      vips.set(vip, f);
    }
    if (lb.listeners.length === 0) v.add(`${f}.listeners`, "REQUIRED", "a load balancer needs at least one listener");
    if (lb.listeners.length > MAX_LISTENERS) v.add(`${f}.listeners`, "TOO_MANY", `at most ${MAX_LISTENERS}, got ${lb.listeners.length}`);
    const seen = new Map<string, string>();
    const listeners: LbListenerDesired[] = [];
    lb.listeners.forEach((l, j) => {
      const fl = `${f}.listeners[${j}]`;
      const protocol = PROTOCOLS.get(l.protocol);
      if (!protocol) v.add(`${fl}.protocol`, l.protocol === RouterLoadBalancerProtocol.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be TCP or UDP");
      const portOk = port(v, `${fl}.port`, l.port, false);
      if (protocol && portOk) {
        const key = `${protocol}/${l.port}`;
        if (seen.has(key)) v.add(`${fl}.port`, "DUPLICATE", `${protocol.toUpperCase()} port ${l.port} is ${seen.get(key)!}'s already`);
        seen.set(key, fl);
      }
      const algorithm = ALGORITHMS.get(l.algorithm);
      if (!algorithm) v.add(`${fl}.algorithm`, "INVALID_VALUE", "must be ROUND_ROBIN, SOURCE_IP or SOURCE_IP_PORT");
      let healthCheck: LbHealthCheckDesired | undefined;
      const h = l.healthCheck;
      if (h) {
        const fh = `${fl}.health_check`;
        if (h.type !== RouterLoadBalancerHealthCheckType.UNSPECIFIED && h.type !== RouterLoadBalancerHealthCheckType.TCP) v.add(`${fh}.type`, "INVALID_VALUE", "must be TCP");
        const intervalSeconds = bounded(v, `${fh}.interval_seconds`, h.intervalSeconds, 1, 3600, 5);
        const timeoutSeconds = bounded(v, `${fh}.timeout_seconds`, h.timeoutSeconds, 1, Math.max(1, intervalSeconds), Math.min(2, intervalSeconds));
        const rise = bounded(v, `${fh}.rise`, h.rise, 1, 10, 2);
        const fall = bounded(v, `${fh}.fall`, h.fall, 1, 10, 3);
        if (port(v, `${fh}.port`, h.port, true) && h.port === 0 && protocol === "udp") v.add(`${fh}.port`, "REQUIRED", "a UDP listener's TCP health check needs the TCP port its members open");
        healthCheck = { intervalSeconds, timeoutSeconds, rise, fall, port: h.port };
      }
      if (l.members.length > MAX_MEMBERS) v.add(`${fl}.members`, "TOO_MANY", `at most ${MAX_MEMBERS}, got ${l.members.length}`);
      const mids = new Map<string, string>();
      const targets = new Map<string, string>();
      const members: LbMemberDesired[] = [];
      l.members.forEach((m, k) => {
        const fm = `${fl}.members[${k}]`;
        let good = uuid(v, `${fm}.member_id`, m.memberId);
        if (good && mids.has(m.memberId)) {
          v.add(`${fm}.member_id`, "DUPLICATE", `is ${mids.get(m.memberId)!}'s too`);
          good = false;
        }
        mids.set(m.memberId, fm);
        let address: string | undefined;
        if (v.required(`${fm}.address`, m.address !== "")) address = ip(v, `${fm}.address`, m.address);
        if (address !== undefined) {
          const n = parseIp4(address)!;
          if (!ctx.internal.some((a) => hostOf(a.subnet, n))) v.add(`${fm}.address`, "OUT_OF_RANGE", "must be a host address inside one of the interfaces' subnets");
          else if (ctx.internal.some((a) => a.ip === n)) v.add(`${fm}.address`, "INVALID_VALUE", "is a router interface's own address");
        }
        const mport = m.port === 0 ? l.port : m.port;
        const portGood = port(v, `${fm}.port`, m.port, true);
        const weight = m.weight === 0 ? 1 : m.weight;
        v.range(`${fm}.weight`, weight, 1, 256);
        if (address !== undefined && portGood) {
          const t = `${address}:${mport}`;
          if (targets.has(t)) v.add(`${fm}.address`, "DUPLICATE", `${t} is ${targets.get(t)!}'s already`);
          targets.set(t, fm);
        }
        if (good && address !== undefined) members.push({ memberId: m.memberId, address, port: mport, weight });
      });
      if (protocol && algorithm) listeners.push({ protocol, port: l.port, algorithm, members: members.sort((a, b) => a.memberId.localeCompare(b.memberId)), ...(healthCheck ? { healthCheck } : {}) });
    });
    if (ok && vip !== undefined) {
      out.push({ loadBalancerId: lb.loadBalancerId, vip, ...(networkId ? { networkId } : {}), listeners: listeners.sort((a, b) => a.protocol.localeCompare(b.protocol) || a.port - b.port) });
    }
  });
  // A member at a VIP (of any load balancer, listed before or after it) would be the router itself.
  lbs.forEach((lb, i) =>
    lb.listeners.forEach((l, j) =>
      l.members.forEach((m, k) => {
        const a = parseIp4(m.address);
        const at = a === undefined ? undefined : vips.get(formatIp4(a));
        if (at) v.add(`${p}[${i}].listeners[${j}].members[${k}].address`, "CONFLICT", `is the VIP of ${at}`);
      }),
    ),
  );
  return out.sort((a, b) => a.loadBalancerId.localeCompare(b.loadBalancerId));
}
