import {
  BackendProtocol,
  HealthMonitorType,
  ListenerProtocol,
  LoadBalancingAlgorithm,
  SessionPersistenceType,
  type BackendPool,
  type HealthMonitor,
  type Listener,
  type LoadBalancerSpec,
  type PoolMember,
} from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { CONTROL_CHARS, ID_DESCRIPTION, ID_PATTERN, ipv4ToInt, subnetContaining, unusableAddress, type AddressPlan, type Violations } from "@quantix/core";

/**
 * What the control plane accepts of a load balancer (L4 only: the router of the VIP
 * network forwards TCP and UDP with nftables; the agent side is another piece).
 */
export const LB_LIMITS = {
  listenersMax: 16,
  poolsMax: 16,
  membersMax: 256,
  /** AddPoolMembers and RemovePoolMembers: members per call. */
  perCallMax: 100,
  weightMax: 256,
  delayMaxSeconds: 300,
  thresholdMax: 10,
  memberNameMax: 63,
} as const;

/** Defaults read back (a 0 in the request means these). */
export const LB_DEFAULTS = { delaySeconds: 5, timeoutSeconds: 3, healthyThreshold: 2, unhealthyThreshold: 3, weight: 1 } as const;

/** Listener and pool names: ^[a-z][a-z0-9-]*$, at most 63 characters. */
export const LB_CHILD_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const CHILD_NAME_DESCRIPTION = "must be a lowercase letter, then lowercase letters, digits or '-', at most 63 characters";
/** Member names: the default "<address>:<port>" and names like "web-1". */
export const LB_MEMBER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,62}$/;
const MEMBER_NAME_DESCRIPTION = "must be a letter or digit, then letters, digits, '_', '.', ':' or '-', at most 63 characters";

/** The VIP network as the checks need it: its address plan and the VIP (when known). */
export interface VipContext {
  readonly plan: AddressPlan;
  readonly vip: string;
}

/** Which listener protocols pair with which pool protocols (L4: TCP with TCP, UDP with UDP). */
const TRANSPORT: Partial<Record<ListenerProtocol, BackendProtocol>> = {
  [ListenerProtocol.TCP]: BackendProtocol.TCP,
  [ListenerProtocol.UDP]: BackendProtocol.UDP,
};

/**
 * Checks a load balancer's listeners and pools (under `spec.`) and completes their
 * defaults in place (algorithm ROUND_ROBIN, member names and weights, health monitor
 * timings). `ctx` undefined: the VIP network is not known (missing or malformed id), so
 * member addresses are checked for format only.
 */
export function checkLoadBalancerBody(v: Violations, spec: LoadBalancerSpec, ctx: VipContext | undefined): void {
  if (spec.listeners.length === 0) v.add("spec.listeners", "REQUIRED", "a load balancer needs at least one listener");
  if (spec.listeners.length > LB_LIMITS.listenersMax) v.add("spec.listeners", "TOO_MANY", `at most ${LB_LIMITS.listenersMax} listeners, got ${spec.listeners.length}`);
  if (spec.pools.length === 0) v.add("spec.pools", "REQUIRED", "a load balancer needs at least one pool");
  if (spec.pools.length > LB_LIMITS.poolsMax) v.add("spec.pools", "TOO_MANY", `at most ${LB_LIMITS.poolsMax} pools, got ${spec.pools.length}`);
  const pools = new Map<string, BackendPool>();
  spec.pools.forEach((p, i) => {
    const f = `spec.pools[${i}]`;
    if (v.required(`${f}.name`, p.name !== "") && v.pattern(`${f}.name`, p.name, LB_CHILD_NAME, CHILD_NAME_DESCRIPTION)) {
      if (pools.has(p.name)) v.add(`${f}.name`, "DUPLICATE", `another pool is named '${p.name}'`);
      else pools.set(p.name, p);
    }
    checkPool(v, f, p, ctx);
  });
  const ports = new Map<string, number>();
  const names = new Set<string>();
  spec.listeners.forEach((l, i) => {
    const f = `spec.listeners[${i}]`;
    if (v.required(`${f}.name`, l.name !== "") && v.pattern(`${f}.name`, l.name, LB_CHILD_NAME, CHILD_NAME_DESCRIPTION)) {
      if (names.has(l.name)) v.add(`${f}.name`, "DUPLICATE", `another listener is named '${l.name}'`);
      names.add(l.name);
    }
    const l4 = checkListener(v, f, l);
    if (l4 && l.port >= 1 && l.port <= 65535) {
      const key = `${ListenerProtocol[l.protocol]} ${l.port}`;
      const other = ports.get(key);
      if (other !== undefined) v.add(`${f}.port`, "DUPLICATE", `${key} is listener ${other}'s (spec.listeners[${other}]) already`);
      else ports.set(key, i);
    }
    if (l.defaultPool !== "") {
      const pool = pools.get(l.defaultPool);
      if (!pool) {
        if (!spec.pools.some((p) => p.name === l.defaultPool)) v.add(`${f}.default_pool`, "NOT_FOUND", `no pool is named '${l.defaultPool}'`);
      } else if (l4 && TRANSPORT[l.protocol] !== undefined && pool.protocol !== TRANSPORT[l.protocol] && TRANSPORT_POOLS.has(pool.protocol)) {
        v.add(`${f}.default_pool`, "CONFLICT", `pool '${pool.name}' speaks ${BackendProtocol[pool.protocol]}; a ${ListenerProtocol[l.protocol]} listener forwards to a ${ListenerProtocol[l.protocol]} pool`);
      }
    }
  });
}

const TRANSPORT_POOLS: ReadonlySet<BackendProtocol> = new Set([BackendProtocol.TCP, BackendProtocol.UDP]);

/** A listener's own fields; whether its protocol is one that is built (TCP or UDP). */
function checkListener(v: Violations, f: string, l: Listener): boolean {
  let l4 = false;
  if (l.protocol === ListenerProtocol.UNSPECIFIED) v.add(`${f}.protocol`, "REQUIRED", "is required: TCP or UDP");
  else if (ListenerProtocol[l.protocol] === undefined) v.add(`${f}.protocol`, "INVALID_ENUM", `unknown value ${l.protocol}`);
  else if (TRANSPORT[l.protocol] === undefined) v.add(`${f}.protocol`, "NOT_SUPPORTED", `${ListenerProtocol[l.protocol]} listeners are not built: load balancers are L4 only (TCP or UDP)`);
  else l4 = true;
  if (l.port === 0) v.add(`${f}.port`, "REQUIRED", "is required: 1-65535");
  else v.range(`${f}.port`, l.port, 1, 65535);
  const unsupported = (field: string, set: boolean, why: string) => {
    if (set) v.add(`${f}.${field}`, "NOT_SUPPORTED", why);
  };
  unsupported("connection_limit", l.connectionLimit !== 0, "connection limits are not built yet: leave it 0 (unlimited)");
  unsupported("idle_timeout_seconds", l.idleTimeoutSeconds !== 0, "idle timeouts are not built yet: leave it 0 (the router's connection tracking timeouts apply)");
  unsupported("allowed_cidrs", l.allowedCidrs.length > 0, "client CIDR lists are not built yet: filter clients with security groups or leave it empty");
  unsupported("tls_certificate", l.tlsCertificate !== undefined, "TLS termination is not built: load balancers are L4 only");
  unsupported("insert_forwarded_headers", l.insertForwardedHeaders, "forwarded headers are HTTP (L7): load balancers are L4 only");
  return l4;
}

function checkPool(v: Violations, f: string, p: BackendPool, ctx: VipContext | undefined): void {
  if (p.protocol === BackendProtocol.UNSPECIFIED) v.add(`${f}.protocol`, "REQUIRED", "is required: TCP or UDP");
  else if (BackendProtocol[p.protocol] === undefined) v.add(`${f}.protocol`, "INVALID_ENUM", `unknown value ${p.protocol}`);
  else if (!TRANSPORT_POOLS.has(p.protocol)) v.add(`${f}.protocol`, "NOT_SUPPORTED", `${BackendProtocol[p.protocol]} pools are not built: load balancers are L4 only (TCP or UDP)`);
  const asked = p.algorithm;
  if (asked === LoadBalancingAlgorithm.UNSPECIFIED) p.algorithm = LoadBalancingAlgorithm.ROUND_ROBIN;
  else if (LoadBalancingAlgorithm[asked] === undefined) v.add(`${f}.algorithm`, "INVALID_ENUM", `unknown value ${asked}`);
  else if (asked === LoadBalancingAlgorithm.LEAST_CONNECTIONS) v.add(`${f}.algorithm`, "NOT_SUPPORTED", "LEAST_CONNECTIONS is not built: the router spreads connections statelessly (ROUND_ROBIN, SOURCE_IP or SOURCE_IP_PORT)");
  const sp = p.sessionPersistence;
  if (sp) {
    const fs = `${f}.session_persistence`;
    if (sp.type === SessionPersistenceType.UNSPECIFIED) v.add(`${fs}.type`, "REQUIRED", "is required: SOURCE_IP (or leave session_persistence unset)");
    else if (SessionPersistenceType[sp.type] === undefined) v.add(`${fs}.type`, "INVALID_ENUM", `unknown value ${sp.type}`);
    else if (sp.type !== SessionPersistenceType.SOURCE_IP) v.add(`${fs}.type`, "NOT_SUPPORTED", "cookie persistence is HTTP (L7): load balancers are L4 only; use SOURCE_IP");
    else if (p.algorithm !== LoadBalancingAlgorithm.ROUND_ROBIN) {
      v.add(`${fs}.type`, "CONFLICT", `SOURCE_IP persistence is only for ROUND_ROBIN pools (it makes them hash the client's address); ${LoadBalancingAlgorithm[p.algorithm]} decides by itself`);
    }
    if (sp.cookieName !== "") v.add(`${fs}.cookie_name`, "NOT_SUPPORTED", "cookie persistence is HTTP (L7): load balancers are L4 only");
    if (sp.timeoutSeconds !== 0) v.add(`${fs}.timeout_seconds`, "NOT_SUPPORTED", "SOURCE_IP persistence is a hash of the client's address: it has no timeout; leave it 0");
  }
  if (p.members.length > LB_LIMITS.membersMax) v.add(`${f}.members`, "TOO_MANY", `at most ${LB_LIMITS.membersMax} members per pool, got ${p.members.length}`);
  const names = new Map<string, number>();
  const targets = new Map<string, number>();
  p.members.forEach((m, j) => {
    const fm = `${f}.members[${j}]`;
    checkMember(v, fm, m, ctx);
    if (m.name !== "") {
      const other = names.get(m.name);
      if (other !== undefined) v.add(`${fm}.name`, "DUPLICATE", `member ${other} of the pool is named '${m.name}' already`);
      else names.set(m.name, j);
    }
    if (m.address !== "" && m.port !== 0) {
      const t = `${m.address}:${m.port}`;
      const other = targets.get(t);
      if (other !== undefined) v.add(`${fm}.address`, "DUPLICATE", `${t} is member ${other}'s of the pool already`);
      else targets.set(t, j);
    }
  });
  if (p.healthMonitor) {
    checkHealthMonitor(v, `${f}.health_monitor`, p.healthMonitor);
    // The routers check members by a TCP connect: a UDP service would need a TCP port of its own to check, which the contract cannot name.
    if (p.protocol === BackendProtocol.UDP) v.add(`${f}.health_monitor`, "NOT_SUPPORTED", "UDP pools have no health checks: the routers check members by a TCP connection, and the contract has no field for a UDP member's TCP check port; leave it unset (members are then always in)");
  }
}

/**
 * One pool member (under `f`), its defaults completed: name "<address>:<port>", weight 1.
 * Its address must be a host of the VIP network's subnets (not the VIP, not a gateway);
 * an address given through vm_id is filled in before (resolveMemberAddresses).
 */
export function checkMember(v: Violations, f: string, m: PoolMember, ctx: VipContext | undefined): void {
  if (m.vmId !== "") v.pattern(`${f}.vm_id`, m.vmId, ID_PATTERN, ID_DESCRIPTION);
  if (m.address === "") v.add(`${f}.address`, "REQUIRED", "is required: an IPv4 address on the load balancer's VIP network (or give vm_id: the VM's address there is used)");
  else if (ipv4ToInt(m.address) === undefined) v.add(`${f}.address`, "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(m.address)}`);
  else if (ctx) {
    const a = ipv4ToInt(m.address)!;
    if (!subnetContaining(ctx.plan, a)) {
      v.add(`${f}.address`, "OUT_OF_RANGE", `members on another network are not built: ${m.address} is outside the VIP network's subnets (${ctx.plan.subnets.map((s) => s.subnet.cidr).join(", ")}); a member must be on the load balancer's VIP network`);
    } else if (m.address === ctx.vip) v.add(`${f}.address`, "CONFLICT", `${m.address} is the load balancer's own VIP`);
    else {
      const why = unusableAddress(ctx.plan, m.address);
      if (why) v.add(`${f}.address`, "OUT_OF_RANGE", why);
    }
  }
  if (m.port === 0) v.add(`${f}.port`, "REQUIRED", "is required: 1-65535");
  else v.range(`${f}.port`, m.port, 1, 65535);
  if (m.weight === 0) m.weight = LB_DEFAULTS.weight;
  else v.range(`${f}.weight`, m.weight, 1, LB_LIMITS.weightMax);
  if (m.backup) v.add(`${f}.backup`, "NOT_SUPPORTED", "backup members are not built yet: every member takes traffic by weight (drain one with disabled)");
  if (m.name === "" && m.address !== "" && m.port !== 0) m.name = `${m.address}:${m.port}`;
  else if (m.name !== "") {
    if (CONTROL_CHARS.test(m.name) || !LB_MEMBER_NAME.test(m.name)) v.add(`${f}.name`, "INVALID_FORMAT", MEMBER_NAME_DESCRIPTION);
  }
}

function checkHealthMonitor(v: Violations, f: string, h: HealthMonitor): void {
  if (h.type === HealthMonitorType.UNSPECIFIED) v.add(`${f}.type`, "REQUIRED", "is required: TCP");
  else if (HealthMonitorType[h.type] === undefined) v.add(`${f}.type`, "INVALID_ENUM", `unknown value ${h.type}`);
  else if (h.type !== HealthMonitorType.TCP) v.add(`${f}.type`, "NOT_SUPPORTED", `${HealthMonitorType[h.type]} checks are not built: the routers check members by a TCP connection (use TCP)`);
  if (h.delaySeconds === 0) h.delaySeconds = LB_DEFAULTS.delaySeconds;
  else v.range(`${f}.delay_seconds`, h.delaySeconds, 1, LB_LIMITS.delayMaxSeconds, "seconds");
  if (h.timeoutSeconds === 0) h.timeoutSeconds = Math.min(LB_DEFAULTS.timeoutSeconds, h.delaySeconds);
  else v.range(`${f}.timeout_seconds`, h.timeoutSeconds, 1, Math.max(1, Math.min(h.delaySeconds, LB_LIMITS.delayMaxSeconds)), "seconds");
  if (h.healthyThreshold === 0) h.healthyThreshold = LB_DEFAULTS.healthyThreshold;
  else v.range(`${f}.healthy_threshold`, h.healthyThreshold, 1, LB_LIMITS.thresholdMax);
  if (h.unhealthyThreshold === 0) h.unhealthyThreshold = LB_DEFAULTS.unhealthyThreshold;
  else v.range(`${f}.unhealthy_threshold`, h.unhealthyThreshold, 1, LB_LIMITS.thresholdMax);
  const http = (field: string, value: string) => {
    if (value !== "") v.add(`${f}.${field}`, "NOT_SUPPORTED", "HTTP checks are not built: TCP checks have no HTTP fields");
  };
  http("http_method", h.httpMethod);
  http("url_path", h.urlPath);
  http("expected_codes", h.expectedCodes);
  http("http_host", h.httpHost);
}
