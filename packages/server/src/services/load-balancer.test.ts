import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import {
  BackendProtocol,
  HealthMonitorType,
  ListenerProtocol,
  LoadBalancerSchema,
  LoadBalancerState,
  LoadBalancingAlgorithm,
  SessionPersistenceType,
  type LoadBalancer,
} from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { CreateLoadBalancerRequestSchema, DeleteLoadBalancerRequestSchema, GetLoadBalancerRequestSchema, LoadBalancerService } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { PortDeviceOwner } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { CreateVirtualNetworkRequestSchema, VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { DEFAULT_PROJECT_ID, randomIds, systemClock } from "@quantix/core";
import { grpcJsUnary, rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { VirtualNetworkService as Networks } from "./network-service.js";
import { LoadBalancerService as LoadBalancers } from "./load-balancer-service.js";

// LoadBalancerService over the real API (memory store, no nodes): a load balancer on a
// network with a central router to an EXTERNAL network, its VIP a port of that network
// made and deleted in the load balancer's own commits, every bad field named at once
// (nothing created then, no port left behind), pools' members added and removed in
// single writes, the fixed fields kept, the VIP port protected.

const fields = (e: ConnectError) =>
  e
    .findDetails(BadRequestSchema)
    .flatMap((d) => d.fieldViolations.map((v) => v.field))
    .sort();

const TCP = ListenerProtocol.TCP;

describe("load balancers", () => {
  let s: TestServer;
  let nets: Client<typeof VirtualNetworkService>;
  let lbs: Client<typeof LoadBalancerService>;
  let ports: Client<typeof PortService>;
  let fips: Client<typeof FloatingIpService>;
  let ext: VirtualNetwork;
  let net: VirtualNetwork;

  /** A valid spec on `net`: one TCP listener on 80 to a pool of three members on 8080. */
  const spec = (over: Record<string, unknown> = {}) => ({
    vipNetworkId: net.id,
    listeners: [{ name: "http", protocol: TCP, port: 80, defaultPool: "web" }],
    pools: [{ name: "web", protocol: BackendProtocol.TCP, members: [{ address: "10.60.0.11", port: 8080 }, { address: "10.60.0.12", port: 8080 }, { address: "10.60.0.13", port: 8080, weight: 5 }] }],
    ...over,
  });

  /** The VIP ports of the network (what a refused create must not leave behind). */
  const vipPorts = async () => (await ports.listPorts({ networkId: net.id, pageSize: 1000 })).ports.filter((p) => p.status?.deviceOwner === PortDeviceOwner.LOAD_BALANCER);

  before(async () => {
    s = await startTestServer({ demo: false });
    nets = createClient(VirtualNetworkService, s.transport);
    lbs = createClient(LoadBalancerService, s.transport);
    ports = createClient(PortService, s.transport);
    fips = createClient(FloatingIpService, s.transport);
    // As if a node mapped physical network "ext" (this server has no node).
    const withUplink = new Networks({ store: s.cp.store, clock: systemClock, ids: randomIds, featureSupport: async () => ({ supported: ["node-x"], reasons: [] }) });
    ext = await withUplink.create(create(CreateVirtualNetworkRequestSchema, { name: "public", spec: { type: NetworkType.EXTERNAL, cidr: "203.0.113.0/24", physicalNetwork: "ext" } }));
    net = await nets.createVirtualNetwork({ name: "apps", spec: { type: NetworkType.VXLAN, cidr: "10.60.0.0/24", router: { externalNetworkId: ext.id, snatEnabled: true } } });
  });
  after(async () => s?.close());

  it("creates a load balancer with its VIP port, PENDING, defaults read back; Get, List and gRPC read it", async () => {
    const lb = await lbs.createLoadBalancer({ name: "web", labels: { tier: "front" }, spec: spec() });
    assert.equal(lb.projectId, DEFAULT_PROJECT_ID);
    assert.equal(lb.generation, 1n);
    assert.equal(lb.status?.state, LoadBalancerState.PENDING);
    const ready = lb.status?.conditions.find((c) => c.type === "Ready");
    assert.deepEqual([ready?.status, ready?.reason, ready?.message], [ConditionStatus.FALSE, "Pending", "waiting for the network's router to apply it"]);
    // The VIP: a free address of the network, held by a port owned by the load balancer, without port security.
    const vip = lb.spec!.vipAddress;
    assert.match(vip, /^10\.60\.0\.\d+$/);
    assert.ok(!["10.60.0.1", "10.60.0.11", "10.60.0.12", "10.60.0.13"].includes(vip), vip);
    const port = await ports.getPort({ id: lb.status!.vipPortId });
    assert.deepEqual([port.spec?.networkId, port.spec?.fixedIps, port.status?.deviceOwner, port.status?.deviceId, port.spec?.portSecurityDisabled, port.spec?.securityGroupIds], [net.id, [vip], PortDeviceOwner.LOAD_BALANCER, lb.id, true, []]);
    assert.equal(port.name, `lb-${lb.id.slice(0, 8)}`);
    // Defaults read back: ROUND_ROBIN, member names "<address>:<port>", weight 1.
    const pool = lb.spec!.pools[0]!;
    assert.equal(pool.algorithm, LoadBalancingAlgorithm.ROUND_ROBIN);
    assert.deepEqual(
      pool.members.map((m) => [m.name, m.weight]),
      [["10.60.0.11:8080", 1], ["10.60.0.12:8080", 1], ["10.60.0.13:8080", 5]],
    );
    const got = await lbs.getLoadBalancer({ id: lb.id });
    assert.equal(got.spec?.vipAddress, vip);
    // No node here can host the network's router: the controller says so (ERROR, the router's reason), and it lists by that state.
    const stuck = await until(async () => {
      const x = await lbs.getLoadBalancer({ id: lb.id });
      return x.status?.state === LoadBalancerState.ERROR ? x : undefined;
    }, "the load balancer in ERROR with its router's reason");
    assert.equal(stuck.status!.conditions.find((c) => c.type === "Ready")?.reason, "RouterNotReady");
    assert.match(stuck.status!.errorMessage, /no node can host the router/);
    const listed = await lbs.listLoadBalancers({ vipNetworkId: net.id, states: [LoadBalancerState.ERROR], labels: { tier: "front" } });
    assert.deepEqual(listed.loadBalancers.map((l) => l.id), [lb.id]);
    assert.equal((await lbs.listLoadBalancers({ states: [LoadBalancerState.ACTIVE] })).loadBalancers.length, 0);
    const byVm = await rejection(lbs.listLoadBalancers({ memberVmId: "0b5e8b8e-0000-4000-8000-000000000001" }));
    assert.equal(byVm.code, Code.InvalidArgument);
    assert.deepEqual(fields(byVm), ["member_vm_id"]);
    // A grpc-js client reads it too.
    const overGrpc = await grpcJsUnary(new URL(s.url).host, grpc.credentials.createInsecure(), "/Quantixkvm.network.v1.LoadBalancerService/GetLoadBalancer", GetLoadBalancerRequestSchema, LoadBalancerSchema, { id: lb.id });
    assert.equal((overGrpc as LoadBalancer).spec?.vipAddress, vip);
    // The name is unique in the project.
    const twin = await rejection(lbs.createLoadBalancer({ name: "web", spec: spec() }));
    assert.equal(twin.code, Code.AlreadyExists);
    assert.match(twin.message, /a load balancer named 'web' already exists/);
    // Stats come from the router, which no node here can host: refused, saying why.
    const stats = await rejection(lbs.getLoadBalancerStats({ id: lb.id }));
    assert.equal(stats.code, Code.FailedPrecondition);
    assert.match(stats.message, new RegExp(`has not been applied: the router of network '${net.id}' runs on no node yet \\(no node can host the router`));
    await lbs.deleteLoadBalancer({ id: lb.id });
  });

  it("a given VIP is taken as asked; health monitor defaults read back", async () => {
    const lb = await lbs.createLoadBalancer({
      name: "given",
      spec: spec({
        vipAddress: "10.60.0.200",
        pools: [{ name: "web", protocol: BackendProtocol.TCP, algorithm: LoadBalancingAlgorithm.SOURCE_IP_PORT, healthMonitor: { type: HealthMonitorType.TCP } }, { name: "dns", protocol: BackendProtocol.UDP, sessionPersistence: { type: SessionPersistenceType.SOURCE_IP } }, { name: "alt", protocol: BackendProtocol.TCP, healthMonitor: { type: HealthMonitorType.TCP, delaySeconds: 2 } }],
        listeners: [{ name: "http", protocol: TCP, port: 80, defaultPool: "web" }, { name: "dns", protocol: ListenerProtocol.UDP, port: 53, defaultPool: "dns" }, { name: "dns-tcp", protocol: TCP, port: 53 }, { name: "alt", protocol: TCP, port: 8080, defaultPool: "alt" }],
      }),
    });
    assert.equal(lb.spec?.vipAddress, "10.60.0.200");
    const [web, dns, alt] = lb.spec!.pools;
    const hm = (p: typeof web) => [p!.healthMonitor!.delaySeconds, p!.healthMonitor!.timeoutSeconds, p!.healthMonitor!.healthyThreshold, p!.healthMonitor!.unhealthyThreshold];
    assert.deepEqual(hm(web), [5, 3, 2, 3]);
    assert.deepEqual(hm(alt), [2, 2, 2, 3]);
    assert.equal(dns!.algorithm, LoadBalancingAlgorithm.ROUND_ROBIN);
    // The address is held: another load balancer (or port) asking for it is refused naming the holder.
    const taken = await rejection(lbs.createLoadBalancer({ name: "again", spec: spec({ vipAddress: "10.60.0.200" }) }));
    assert.equal(taken.code, Code.AlreadyExists);
    assert.match(taken.message, new RegExp(`10\\.60\\.0\\.200 .* held by port '${lb.status!.vipPortId}'`));
    await lbs.deleteLoadBalancer({ id: lb.id });
    // The routers check members by a TCP connection only: PING checks, and checks of UDP pools, are refused by field.
    const checks = await rejection(
      lbs.createLoadBalancer({
        name: "checks",
        spec: spec({ pools: [{ name: "web", protocol: BackendProtocol.TCP, healthMonitor: { type: HealthMonitorType.PING } }, { name: "dns", protocol: BackendProtocol.UDP, healthMonitor: { type: HealthMonitorType.TCP } }], listeners: [{ name: "http", protocol: TCP, port: 80, defaultPool: "web" }, { name: "dns", protocol: ListenerProtocol.UDP, port: 53, defaultPool: "dns" }] }),
      }),
    );
    assert.equal(checks.code, Code.InvalidArgument);
    assert.deepEqual(fields(checks).sort(), ["spec.pools[0].health_monitor.type", "spec.pools[1].health_monitor"]);
  });

  it("every bad field is named at once, and nothing is created (no port left behind)", async () => {
    const before = (await vipPorts()).length;
    // (A BadRequest detail carries at most 2 KiB of violations: the bad fields come in three requests.)
    const top = await rejection(
      lbs.createLoadBalancer({
        name: "9bad",
        spec: {
          vipNetworkId: net.id,
          vipAddress: "10.60.0.1",
          highAvailability: true,
          listeners: [
            { name: "http", protocol: TCP, port: 80, defaultPool: "web", connectionLimit: 10, idleTimeoutSeconds: 5, allowedCidrs: ["0.0.0.0/0"], tlsCertificate: {}, insertForwardedHeaders: true },
            { name: "http", protocol: TCP, port: 80, defaultPool: "dns" },
            { name: "web", protocol: ListenerProtocol.HTTP, port: 8080 },
            { name: "x", protocol: ListenerProtocol.UNSPECIFIED, port: 0, defaultPool: "nope" },
          ],
          pools: [
            { name: "web", protocol: BackendProtocol.TCP },
            { name: "dns", protocol: BackendProtocol.UDP },
          ],
        },
      }),
    );
    assert.equal(top.code, Code.InvalidArgument, top.message);
    assert.deepEqual(
      fields(top),
      [
        "name",
        "spec.high_availability",
        "spec.listeners[0].allowed_cidrs",
        "spec.listeners[0].connection_limit",
        "spec.listeners[0].idle_timeout_seconds",
        "spec.listeners[0].insert_forwarded_headers",
        "spec.listeners[0].tls_certificate",
        "spec.listeners[1].default_pool",
        "spec.listeners[1].name",
        "spec.listeners[1].port",
        "spec.listeners[2].protocol",
        "spec.listeners[3].default_pool",
        "spec.listeners[3].port",
        "spec.listeners[3].protocol",
        "spec.vip_address",
      ].sort(),
    );
    const poolsBad = await rejection(
      lbs.createLoadBalancer({
        name: "pools",
        spec: {
          vipNetworkId: net.id,
          listeners: [{ name: "http", protocol: TCP, port: 80 }],
          pools: [
            {
              name: "web",
              protocol: BackendProtocol.TCP,
              algorithm: LoadBalancingAlgorithm.LEAST_CONNECTIONS,
              sessionPersistence: { type: SessionPersistenceType.HTTP_COOKIE, cookieName: "JSESSIONID" },
              healthMonitor: { type: HealthMonitorType.HTTP, delaySeconds: 301, timeoutSeconds: 400, healthyThreshold: 11, unhealthyThreshold: 11, urlPath: "/" },
            },
            { name: "dns", protocol: BackendProtocol.UDP, algorithm: LoadBalancingAlgorithm.SOURCE_IP, sessionPersistence: { type: SessionPersistenceType.SOURCE_IP, timeoutSeconds: 60 } },
            { name: "Web", protocol: BackendProtocol.HTTP },
          ],
        },
      }),
    );
    assert.deepEqual(
      fields(poolsBad),
      [
        "spec.pools[0].algorithm",
        "spec.pools[0].health_monitor.delay_seconds",
        "spec.pools[0].health_monitor.healthy_threshold",
        "spec.pools[0].health_monitor.timeout_seconds",
        "spec.pools[0].health_monitor.type",
        "spec.pools[0].health_monitor.unhealthy_threshold",
        "spec.pools[0].health_monitor.url_path",
        "spec.pools[0].session_persistence.cookie_name",
        "spec.pools[0].session_persistence.type",
        "spec.pools[1].session_persistence.timeout_seconds",
        "spec.pools[1].session_persistence.type",
        "spec.pools[2].name",
        "spec.pools[2].protocol",
      ].sort(),
    );
    const membersBad = await rejection(
      lbs.createLoadBalancer({
        name: "members",
        spec: spec({
          pools: [
            {
              name: "web",
              protocol: BackendProtocol.TCP,
              members: [
                { address: "192.168.1.5", port: 8080 },
                { address: "10.60.0.11", port: 0, weight: 300, backup: true },
                { name: "same", address: "10.60.0.12", port: 8080 },
                { name: "same", address: "10.60.0.12", port: 8080 },
                { address: "10.60.0.1", port: 8080 },
                { address: "", port: 8080, vmId: "bad id!" },
              ],
            },
          ],
        }),
      }),
    );
    assert.deepEqual(
      fields(membersBad),
      [
        "spec.pools[0].members[0].address",
        "spec.pools[0].members[1].backup",
        "spec.pools[0].members[1].port",
        "spec.pools[0].members[1].weight",
        "spec.pools[0].members[3].address",
        "spec.pools[0].members[3].name",
        "spec.pools[0].members[4].address",
        "spec.pools[0].members[5].address",
        "spec.pools[0].members[5].vm_id",
      ].sort(),
    );
    const says = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => `${v.field}: ${v.description}`)).join("\n");
    assert.match(says(membersBad), /members\[0\]\.address: members on another network/);
    assert.match(says(top), /listeners\[2\]\.protocol: HTTP listeners are not built: load balancers are L4 only/);
    // Empty listeners and pools, a missing network id.
    const empty = await rejection(lbs.createLoadBalancer({ name: "empty", spec: {} }));
    assert.deepEqual(fields(empty), ["spec.listeners", "spec.pools", "spec.vip_network_id"]);
    // A member on another network is named by its path even when all else is right.
    const other = await rejection(lbs.createLoadBalancer({ name: "other", spec: spec({ pools: [{ name: "web", protocol: BackendProtocol.TCP, members: [{ address: "10.61.0.5", port: 8080 }] }] }) }));
    assert.deepEqual(fields(other), ["spec.pools[0].members[0].address"]);
    assert.match(other.message, /members on another network/);
    // A TCP listener to a UDP pool.
    const mismatch = await rejection(lbs.createLoadBalancer({ name: "mismatch", spec: spec({ pools: [{ name: "web", protocol: BackendProtocol.UDP }] }) }));
    assert.deepEqual(fields(mismatch), ["spec.listeners[0].default_pool"]);
    // A VM that does not exist.
    const ghost = await rejection(lbs.createLoadBalancer({ name: "ghost", spec: spec({ pools: [{ name: "web", protocol: BackendProtocol.TCP, members: [{ address: "10.60.0.20", port: 80, vmId: "0b5e8b8e-0000-4000-8000-000000000001" }] }] }) }));
    assert.equal(ghost.code, Code.InvalidArgument);
    assert.deepEqual(fields(ghost), ["spec.pools[0].members[0].vm_id"]);
    // The EXTERNAL network itself is no VIP network.
    const onExt = await rejection(lbs.createLoadBalancer({ name: "onext", spec: spec({ vipNetworkId: ext.id }) }));
    assert.equal(onExt.code, Code.InvalidArgument);
    assert.deepEqual(fields(onExt), ["spec.vip_network_id"]);
    assert.equal((await vipPorts()).length, before);
    assert.equal((await lbs.listLoadBalancers({})).loadBalancers.length, 0);
  });

  it("concurrent creates get distinct VIPs; of two creates of one name, one wins; a watch sees them", async () => {
    const watch = new AbortController();
    const seen: string[] = [];
    const watching = (async () => {
      try {
        for await (const u of lbs.watchLoadBalancers({ labels: { race: "yes" } }, { signal: watch.signal })) if (u.loadBalancer) seen.push(u.loadBalancer.name);
      } catch {
        // aborted
      }
    })();
    const made = await Promise.all(Array.from({ length: 10 }, (_, i) => lbs.createLoadBalancer({ name: `race-${i}`, labels: { race: "yes" }, spec: spec({ pools: [{ name: "web", protocol: BackendProtocol.TCP }] }) })));
    assert.equal(new Set(made.map((l) => l.spec!.vipAddress)).size, 10);
    // The service itself with a fixed random: every create picks the same first free address, so all but one lose it and pick again.
    const fixed = new LoadBalancers({ store: s.cp.store, clock: systemClock, ids: randomIds, random: () => 0 });
    const raced = await Promise.all(Array.from({ length: 5 }, (_, i) => fixed.create(create(CreateLoadBalancerRequestSchema, { name: `fixed-${i}`, spec: spec({ pools: [{ name: "web", protocol: BackendProtocol.TCP }] }) }))));
    assert.equal(new Set(raced.map((l) => l.spec!.vipAddress)).size, 5);
    for (const l of raced) await fixed.delete(create(DeleteLoadBalancerRequestSchema, { id: l.id }));
    const twins = await Promise.allSettled([0, 1].map(() => lbs.createLoadBalancer({ name: "twin", spec: spec() })));
    assert.deepEqual(twins.map((t) => t.status).sort(), ["fulfilled", "rejected"]);
    const lost = twins.find((t) => t.status === "rejected") as PromiseRejectedResult;
    assert.equal(ConnectError.from(lost.reason).code, Code.AlreadyExists);
    assert.equal((await vipPorts()).length, 11);
    await until(() => (new Set(seen).size >= 10 ? true : undefined), "the watch to see the ten load balancers");
    watch.abort();
    await watching;
    assert.deepEqual([...new Set(seen)].sort(), made.map((l) => l.name).sort());
    for (const l of [...made, (twins.find((t) => t.status === "fulfilled") as PromiseFulfilledResult<LoadBalancer>).value]) await lbs.deleteLoadBalancer({ id: l.id });
    assert.equal((await vipPorts()).length, 0);
  });

  it("a network without a central router is refused FAILED_PRECONDITION; an unknown one NOT_FOUND", async () => {
    const plain = await nets.createVirtualNetwork({ name: "plain", spec: { type: NetworkType.VXLAN, cidr: "10.70.0.0/24" } });
    const e = await rejection(lbs.createLoadBalancer({ name: "norouter", spec: spec({ vipNetworkId: plain.id, pools: [{ name: "web", protocol: BackendProtocol.TCP, members: [{ address: "10.70.0.5", port: 8080 }] }] }) }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.message, /give the network a router to an EXTERNAL network/);
    const missing = await rejection(lbs.createLoadBalancer({ name: "missing", spec: spec({ vipNetworkId: "0b5e8b8e-0000-4000-8000-00000000000f", pools: [{ name: "web", protocol: BackendProtocol.TCP }] }) }));
    assert.equal(missing.code, Code.NotFound);
    assert.match(missing.message, /spec\.vip_network_id/);
    assert.equal((await ports.listPorts({ networkId: plain.id })).ports.length, 0);
  });

  it("adds and removes pool members in single writes; concurrent adds all survive; a VM member takes its address", async () => {
    // A VIP of its own choosing: a random one could be an address the members below take.
    const lb = await lbs.createLoadBalancer({ name: "members", spec: spec({ vipAddress: "10.60.0.250" }) });
    const added = await lbs.addPoolMembers({ id: lb.id, poolName: "web", members: [{ name: "a", address: "10.60.0.21", port: 8080 }, { address: "10.60.0.11", port: 8080, weight: 7 }] });
    assert.equal(added.generation, 2n);
    assert.deepEqual(
      added.spec!.pools[0]!.members.map((m) => [m.name, m.weight]),
      [["10.60.0.11:8080", 7], ["10.60.0.12:8080", 1], ["10.60.0.13:8080", 5], ["a", 1]],
    );
    // Bad members are named by their path in the request; an unknown pool by pool_name.
    const bad = await rejection(lbs.addPoolMembers({ id: lb.id, poolName: "web", members: [{ address: "10.99.0.1", port: 8080 }, { address: "10.60.0.22", port: 0 }] }));
    assert.deepEqual(fields(bad), ["members[0].address", "members[1].port"]);
    const clash = await rejection(lbs.addPoolMembers({ id: lb.id, poolName: "web", members: [{ name: "b", address: "10.60.0.21", port: 8080 }] }));
    assert.deepEqual(fields(clash), ["members[0].address"]);
    const noPool = await rejection(lbs.addPoolMembers({ id: lb.id, poolName: "nope", members: [{ address: "10.60.0.30", port: 80 }] }));
    assert.equal(noPool.code, Code.NotFound);
    assert.match(noPool.message, /pool_name/);
    // Concurrent adds of different members: every one is there after.
    const many = Array.from({ length: 12 }, (_, i) => lbs.addPoolMembers({ id: lb.id, poolName: "web", members: [{ address: `10.60.0.${100 + i}`, port: 9000 }] }));
    await Promise.all(many);
    const after = await lbs.getLoadBalancer({ id: lb.id });
    const names = after.spec!.pools[0]!.members.map((m) => m.name);
    for (let i = 0; i < 12; i++) assert.ok(names.includes(`10.60.0.${100 + i}:9000`), names.join());
    // Not applied (no node hosts the router here): PENDING after the change, then ERROR with the router's reason; never ACTIVE.
    assert.ok([LoadBalancerState.PENDING, LoadBalancerState.ERROR].includes(after.status!.state), LoadBalancerState[after.status!.state]);
    assert.ok(after.status!.observedGeneration < after.generation, "the new spec is not applied");
    // Remove by name; unknown names are ignored.
    const removed = await lbs.removePoolMembers({ id: lb.id, poolName: "web", memberNames: ["a", "10.60.0.100:9000", "never"] });
    const left = removed.spec!.pools[0]!.members.map((m) => m.name);
    assert.ok(!left.includes("a") && !left.includes("10.60.0.100:9000"));
    assert.equal(left.length, names.length - 2);
    const again = await lbs.removePoolMembers({ id: lb.id, poolName: "web", memberNames: ["a"] });
    // (The network controller writes the status meanwhile: the spec's generation is what must not move.)
    assert.equal(again.generation, removed.generation);
    // A VM on the network: its address there is the member's when none is given.
    const vms = createClient(VMService, s.transport);
    const vm = await vms.createVM({ name: "backend", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, nics: [{ id: "nic0", networkId: net.id }] } });
    const vmPort = (await ports.listPorts({ networkId: net.id, deviceId: vm.id })).ports[0]!;
    const withVm = await lbs.addPoolMembers({ id: lb.id, poolName: "web", members: [{ name: "vm", vmId: vm.id, port: 8080 }] });
    const m = withVm.spec!.pools[0]!.members.find((x) => x.name === "vm")!;
    assert.deepEqual([m.address, m.vmId], [vmPort.spec!.fixedIps[0], vm.id]);
    await lbs.deleteLoadBalancer({ id: lb.id });
  });

  it("updates the mutable spec; the fixed fields are refused by name; a rename keeps the name unique", async () => {
    const lb = await lbs.createLoadBalancer({ name: "upd", spec: spec() });
    const fixed = await rejection(lbs.updateLoadBalancer({ id: lb.id, spec: { vipNetworkId: ext.id, vipAddress: "10.60.0.250", highAvailability: true }, updateMask: { paths: ["spec.vip_network_id", "spec.vip_address", "spec.high_availability"] } }));
    assert.equal(fixed.code, Code.InvalidArgument);
    assert.deepEqual(fields(fixed), ["spec.high_availability", "spec.vip_address", "spec.vip_network_id"]);
    const listeners = [{ name: "http", protocol: TCP, port: 80, defaultPool: "web" }, { name: "alt", protocol: TCP, port: 8081, defaultPool: "web" }];
    const up = await lbs.updateLoadBalancer({ id: lb.id, spec: { listeners }, updateMask: { paths: ["spec.listeners"] } });
    assert.deepEqual(up.spec!.listeners.map((l) => l.port), [80, 8081]);
    assert.equal(up.generation, 2n);
    assert.equal(up.spec!.vipAddress, lb.spec!.vipAddress);
    // A duplicate listener port in an update is named.
    const dup = await rejection(lbs.updateLoadBalancer({ id: lb.id, spec: { listeners: [...listeners, { name: "again", protocol: TCP, port: 8081 }] }, updateMask: { paths: ["spec.listeners"] } }));
    assert.deepEqual(fields(dup), ["spec.listeners[2].port"]);
    // Without a mask: the mutable spec replaced whole; labels and description kept unless given.
    const unmasked = await lbs.updateLoadBalancer({ id: lb.id, description: "front", spec: { listeners, pools: [{ name: "web", protocol: BackendProtocol.TCP }], disabled: true } });
    assert.deepEqual([unmasked.description, unmasked.spec!.disabled, unmasked.spec!.pools[0]!.members.length, unmasked.generation], ["front", true, 0, 3n]);
    const labelsOnly = await lbs.updateLoadBalancer({ id: lb.id, labels: { a: "b" }, updateMask: { paths: ["labels"] } });
    assert.equal(labelsOnly.generation, 3n);
    const other = await lbs.createLoadBalancer({ name: "upd2", spec: spec() });
    const rename = await rejection(lbs.updateLoadBalancer({ id: other.id, name: "upd", updateMask: { paths: ["name"] } }));
    assert.equal(rename.code, Code.AlreadyExists);
    await lbs.deleteLoadBalancer({ id: lb.id });
    await lbs.deleteLoadBalancer({ id: other.id });
  });

  it("the VIP port cannot be deleted through PortService; deleting the load balancer deletes it (and disassociates its floating IP); its network then goes", async () => {
    const lb = await lbs.createLoadBalancer({ name: "gone", spec: spec() });
    const portId = lb.status!.vipPortId;
    const e = await rejection(ports.deletePort({ id: portId }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.match(e.message, new RegExp(`the VIP of load balancer '${lb.id}'.*DeleteLoadBalancer`));
    const readdress = await rejection(ports.updatePort({ id: portId, spec: { fixedIps: ["10.60.0.240"] }, updateMask: { paths: ["spec.fixed_ips"] } }));
    assert.equal(readdress.code, Code.FailedPrecondition);
    assert.match(readdress.message, /the VIP of load balancer/);
    // A floating IP on the VIP: disassociated (not released) with the load balancer.
    const fip = await fips.createFloatingIp({ externalNetworkId: ext.id, portId });
    assert.equal(fip.fixedIp, lb.spec!.vipAddress);
    // Its router stays while the load balancer is there.
    const noRouter = await rejection(nets.updateVirtualNetwork({ id: net.id, spec: {}, updateMask: { paths: ["spec.router"] } }));
    assert.equal(noRouter.code, Code.FailedPrecondition);
    assert.match(noRouter.message, new RegExp(`load balancers on this network are hosted by its router: '${lb.id}' \\(gone\\); delete them first`));
    // The network holding the VIP port is not deleted; the refusal names the load balancer.
    const netDel = await rejection(nets.deleteVirtualNetwork({ id: net.id }));
    assert.equal(netDel.code, Code.FailedPrecondition);
    assert.match(netDel.message, new RegExp(`the VIP of load balancer '${lb.id}' \\(delete the load balancer\\)`));
    await lbs.deleteLoadBalancer({ id: lb.id });
    assert.equal((await rejection(ports.getPort({ id: portId }))).code, Code.NotFound);
    assert.equal((await rejection(lbs.getLoadBalancer({ id: lb.id }))).code, Code.NotFound);
    const after = await fips.getFloatingIp({ id: fip.id });
    assert.equal(after.portId, "");
    assert.equal((await rejection(lbs.deleteLoadBalancer({ id: lb.id }))).code, Code.NotFound);
    // The VIP's address is free again: a new load balancer may ask for it.
    const reuse = await lbs.createLoadBalancer({ name: "reuse", spec: spec({ vipAddress: lb.spec!.vipAddress }) });
    assert.equal(reuse.spec?.vipAddress, lb.spec!.vipAddress);
    await lbs.deleteLoadBalancer({ id: reuse.id });
    await fips.deleteFloatingIp({ id: fip.id });
  });
});
