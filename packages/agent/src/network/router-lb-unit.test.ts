import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { RouterLoadBalancerAlgorithm, RouterLoadBalancerProtocol, RouterSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { LbHealth, type Schedule } from "./router-lb-health.js";
import type { ProbeResult, Prober } from "./router-lb-probe.js";
import { lbSeed } from "./router-lb-ruleset.js";
import { lbCounterNames, lbMemberKey, OWNED_LB_COUNTER, type RouterDesired } from "./router-model.js";
import { routerRuleset } from "./router-ruleset.js";
import { checkRouterSpec } from "./router-validation.js";

// The pure half of load balancers: validation into canonical values with defaults, the
// nft lines, and the health checks' rise/fall state machine (a fake prober, a manual
// clock). The kernel and real traffic are exercised in router-lb.test.ts.

const ROUTER = "7c000000-0000-4000-8000-000000000001";
const NET = "0a000000-0000-4000-8000-000000000001";
const LB = "1c000000-0000-4000-8000-000000000001";
const LB2 = "1c000000-0000-4000-8000-000000000002";
const M = (n: number) => `2c000000-0000-4000-8000-00000000000${n}`;
const TCP = RouterLoadBalancerProtocol.TCP;
const UDP = RouterLoadBalancerProtocol.UDP;

const spec = () =>
  create(RouterSpecSchema, {
    routerId: ROUTER,
    external: { physicalNetwork: "ext", address: "203.0.113.5/24", gatewayIp: "203.0.113.1", macAddress: "02:aa:00:00:00:05" },
    interfaces: [{ networkId: NET, macAddress: "02:aa:00:00:01:01", addresses: ["10.1.0.1/24"] }],
    snatEnabled: true,
    floatingIps: [{ floatingIp: "203.0.113.10", fixedIp: "10.1.0.50" }],
    loadBalancers: [
      { loadBalancerId: LB2, vip: "10.1.0.100", listeners: [{ protocol: UDP, port: 53, algorithm: RouterLoadBalancerAlgorithm.SOURCE_IP_PORT, members: [{ memberId: M(1), address: "10.1.0.11" }] }] },
      {
        loadBalancerId: LB,
        vip: "203.0.113.100",
        listeners: [
          { protocol: TCP, port: 443, algorithm: RouterLoadBalancerAlgorithm.SOURCE_IP, members: [{ memberId: M(1), address: "10.1.0.11", port: 8443 }] },
          {
            protocol: TCP,
            port: 80,
            members: [
              { memberId: M(3), address: "10.1.0.13", port: 8080, weight: 3 },
              { memberId: M(1), address: "10.1.0.11", port: 8080 },
            ],
            healthCheck: { intervalSeconds: 1 },
          },
        ],
      },
    ],
  });

function desired(): RouterDesired {
  const c = checkRouterSpec(spec());
  assert.ok(c.ok, JSON.stringify(!c.ok && c.violations));
  return c.value;
}

test("load balancers come back canonical, ordered, with defaults; the internal VIP knows its network", () => {
  const r = desired();
  assert.deepEqual(r.loadBalancers.map((l) => [l.loadBalancerId, l.vip, l.networkId]), [[LB, "203.0.113.100", undefined], [LB2, "10.1.0.100", NET]]);
  const [l80, l443] = r.loadBalancers[0]!.listeners;
  assert.deepEqual([l80!.port, l443!.port], [80, 443]);
  assert.equal(l80!.algorithm, "round_robin");
  assert.deepEqual(l80!.members.map((m) => [m.memberId, m.port, m.weight]), [[M(1), 8080, 1], [M(3), 8080, 3]]);
  assert.deepEqual(l80!.healthCheck, { intervalSeconds: 1, timeoutSeconds: 1, rise: 2, fall: 3, port: 0 });
  assert.equal(r.loadBalancers[1]!.listeners[0]!.members[0]!.port, 53, "member port 0 is the listener's");
});

test("every bad load balancer field is named", () => {
  const s = spec();
  const lb = s.loadBalancers[1]!;
  lb.vip = "203.0.113.10"; // the floating IP
  lb.listeners[0]!.port = 80; // the second TCP 80 is the duplicate
  lb.listeners[1]!.members[1]!.address = "10.2.0.11"; // outside the interfaces' subnets
  lb.listeners[1]!.members[0]!.memberId = M(1); // duplicate id within the listener
  lb.listeners[1]!.healthCheck!.fall = 11;
  s.loadBalancers[0]!.vip = "10.1.0.50"; // a floating IP's fixed IP
  s.loadBalancers.push(create(RouterSpecSchema, { loadBalancers: [{ loadBalancerId: LB, vip: "10.1.0.1", listeners: [] }] }).loadBalancers[0]!);
  const c = checkRouterSpec(s);
  assert.ok(!c.ok);
  assert.deepEqual(c.violations.map((v) => v.field).sort(), [
    "spec.load_balancers[0].vip",
    "spec.load_balancers[1].listeners[1].health_check.fall",
    "spec.load_balancers[1].listeners[1].members[1].address",
    "spec.load_balancers[1].listeners[1].members[1].member_id",
    "spec.load_balancers[1].listeners[1].port",
    "spec.load_balancers[1].vip",
    "spec.load_balancers[2].listeners",
    "spec.load_balancers[2].load_balancer_id",
    "spec.load_balancers[2].vip",
  ]);
  // A UDP listener's TCP check needs its port.
  const u = spec();
  u.loadBalancers[0]!.listeners[0]!.healthCheck = create(RouterSpecSchema, { loadBalancers: [{ listeners: [{ healthCheck: {} }] }] }).loadBalancers[0]!.listeners[0]!.healthCheck!;
  const e = checkRouterSpec(u);
  assert.ok(!e.ok);
  assert.deepEqual(e.violations.map((v) => v.field), ["spec.load_balancers[0].listeners[0].health_check.port"]);
  // A member at a VIP is the router itself.
  const t = spec();
  t.loadBalancers[1]!.listeners[1]!.members[0]!.address = "10.1.0.100";
  const d = checkRouterSpec(t);
  assert.ok(!d.ok);
  assert.deepEqual(d.violations.map((v) => v.field), ["spec.load_balancers[1].listeners[1].members[0].address"]);
});

test("the nft lines: slots per weight over healthy members, seeded jhash, counters by id, no rule without a healthy member", () => {
  const r = desired();
  const script = routerRuleset(r);
  assert.match(script, /ip daddr 203\.0\.113\.100 tcp dport 80 dnat ip to numgen inc mod 4 map \{ 0 : 10\.1\.0\.11 \. 8080, 1-3 : 10\.1\.0\.13 \. 8080 \}/);
  assert.match(script, new RegExp(`ip daddr 203\\.0\\.113\\.100 tcp dport 443 dnat ip to jhash ip saddr mod 1 seed ${lbSeed(LB)} map \\{ 0 : 10\\.1\\.0\\.11 \\. 8443 \\}`));
  assert.match(script, /ip daddr 10\.1\.0\.100 udp dport 53 dnat ip to jhash ip saddr \. udp sport mod 1 seed 0x[0-9a-f]{8} map/);
  assert.match(script, /set lb_vips \{ type ipv4_addr; elements = \{ 203\.0\.113\.100, 10\.1\.0\.100 \}; \}/);
  const names = lbCounterNames(LB, { protocol: "tcp", port: 80 }, M(3));
  assert.ok(OWNED_LB_COUNTER.test(names.connections) && OWNED_LB_COUNTER.test(names.traffic));
  assert.match(script, new RegExp(`counter ${names.traffic} \\{\\}`));
  assert.match(script, new RegExp(`ct original protocol tcp ct original ip daddr 203\\.0\\.113\\.100 ct original proto-dst 80 ct reply ip saddr 10\\.1\\.0\\.13 ct reply proto-src 8080 ct state new counter name "${names.connections}"`));
  // The table is refilled, not recreated (counters survive); stale counters go after the flush.
  assert.doesNotMatch(script, /delete table/);
  const stale = routerRuleset(r, { staleCounters: ["lbn_x"] });
  assert.ok(stale.indexOf("flush chain ip quantix_router lb_forward") < stale.indexOf("delete counter ip quantix_router lbn_x"));
  // m3 unhealthy: only m1 in the map; none healthy: no rule for the listener.
  const downM3 = routerRuleset(r, { healthy: (k) => k !== lbMemberKey(LB, { protocol: "tcp", port: 80 }, M(3)) });
  assert.match(downM3, /tcp dport 80 dnat ip to numgen inc mod 1 map \{ 0 : 10\.1\.0\.11 \. 8080 \}/);
  assert.doesNotMatch(routerRuleset(r, { healthy: (k) => !k.includes("/tcp80/") }), /tcp dport 80 dnat/);
  // Without load balancers: no counting rules at all.
  assert.doesNotMatch(routerRuleset({ ...r, loadBalancers: [] }), /lb_vips return|dnat ip to/);
});

/** A prober answering from a table; a clock run by hand. */
function harness() {
  const answers = new Map<string, ProbeResult>();
  const prober: Prober = { probe: async (_r, address, port) => answers.get(`${address}:${port}`) ?? { ok: false, reason: "ECONNREFUSED" }, stop: () => undefined, close: () => undefined };
  let due: (() => void)[] = [];
  const schedule: Schedule = (fn) => {
    due.push(fn);
    return () => (due = due.filter((f) => f !== fn));
  };
  const changes: string[] = [];
  const h = new LbHealth(prober, (id) => changes.push(id), schedule);
  /** Runs every due check once and lets their results land. */
  const tick = async () => {
    const now = due;
    due = [];
    for (const f of now) f();
    await new Promise((r) => setImmediate(r));
  };
  return { answers, h, tick, changes };
}

test("health: a new member starts in, leaves at its first failure, then rise and fall thresholds apply", async () => {
  const r = desired();
  const { answers, h, tick, changes } = harness();
  const k1 = lbMemberKey(LB, { protocol: "tcp", port: 80 }, M(1));
  const k3 = lbMemberKey(LB, { protocol: "tcp", port: 80 }, M(3));
  answers.set("10.1.0.11:8080", { ok: true, reason: "connected" });
  h.sync(ROUTER, r);
  assert.deepEqual(h.view(ROUTER, k3), { healthy: true, reason: "NotCheckedYet" });
  assert.equal(h.view(ROUTER, lbMemberKey(LB, { protocol: "tcp", port: 443 }, M(1))), undefined, "no health check: not tracked");
  h.start(ROUTER);
  await tick();
  assert.deepEqual(h.view(ROUTER, k3), { healthy: false, reason: "ECONNREFUSED" }, "never seen healthy: out at once");
  assert.deepEqual(h.view(ROUTER, k1), { healthy: true, reason: "connected" });
  assert.deepEqual(changes, [ROUTER]);
  answers.set("10.1.0.13:8080", { ok: true, reason: "connected" });
  await tick();
  assert.deepEqual(h.view(ROUTER, k3), { healthy: false, reason: "connected (1/2 to rise)" });
  await tick();
  assert.equal(h.healthy(ROUTER, k3), true);
  answers.delete("10.1.0.11:8080");
  await tick();
  await tick();
  assert.deepEqual(h.view(ROUTER, k1), { healthy: true, reason: "ECONNREFUSED (2/3 to fall)" });
  await tick();
  assert.equal(h.healthy(ROUTER, k1), false);
  assert.equal(changes.length, 3);
  // A check that cannot run says nothing about the member.
  answers.set("10.1.0.13:8080", { ok: false, reason: "health check helper exited (1)", inconclusive: true });
  await tick();
  assert.equal(h.healthy(ROUTER, k3), true);
  // Removed from the spec: no longer tracked (its key is always in again).
  h.sync(ROUTER, undefined);
  assert.equal(h.view(ROUTER, k1), undefined);
  h.close();
});
