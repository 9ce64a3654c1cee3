import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FloatingIpState } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { ROUTER_EXTERNAL_DEVICE, ROUTER_TABLE, routerNetns, routerRuleset, type RouterDesired } from "@quantix/agent";
import { startNetCluster, type NetCluster } from "./net-cluster.js";
import { makeNamespace, poll, removeNamespaces, run, sh, startNftMonitor, watchStateFile, type NftMonitor } from "./net-hosts.js";
import { median, nowMs } from "./stats.js";

/** Floating-IP association: through the control plane, and the agent's commands run directly. */
export interface FipAssocResult {
  readonly rounds: number;
  /** AssociateFloatingIp until the watch reports ACTIVE, and until the router's `nft monitor` shows the mapping; the call's answer. */
  readonly quantix: { readonly activeMs: number[]; readonly medianActiveMs: number; readonly nftMs: number[]; readonly medianNftMs: number; readonly answerMs: number[]; readonly agentTookMs: number[] };
  /** One `nft -f` of the router's table with the mapping and `ip addr add <fip>/32 dev qre`, until both ended and the monitor showed the mapping. */
  readonly direct: { readonly samplesMs: number[]; readonly medianMs: number; readonly nftMs: number[] };
  readonly floatingIp: string;
  readonly fixedIp: string;
}

// The edge bench's prefix (`qeb<pid hex>`), as net-lb-rate.ts; suffixes differ.
const P = `qeb${(process.pid & 0xfff).toString(16)}`;
const HOST = `${P}a`;
const OUT = `${P}q`;
const SCRATCH = `${P}r`;
const PHYS = `${P}ax`;
const UPSTREAM = "198.51.100.1";
const FIXED = "10.58.0.10";

/** Whether the router namespace's map `fip_dnat` has `fip : fixed`. */
const mapped = (ns: string, fip: string, fixed: string) => sh(["ip", "netns", "exec", ns, "nft", "list", "map", "ip", ROUTER_TABLE, "fip_dnat"]).includes(`${fip} : ${fixed}`);
const hasAddress = (ns: string, fip: string) => sh(["ip", "-n", ns, "-4", "addr", "show", "dev", ROUTER_EXTERNAL_DEVICE]).includes(`${fip}/32`);

/**
 * Issue 15, row "floating-IP association": one namespace host whose agent maps physical
 * network `ext` (a veth onto an "outside" namespace with the upstream gateway), behind a
 * control plane: an EXTERNAL network, a VXLAN network with a central router (SNAT) on
 * it, a port on the network (no VM: associating a port without an instance is allowed)
 * and a floating IP. Quantix: AssociateFloatingIp until WatchFloatingIps (open before
 * the clock) reports the floating IP ACTIVE, and until `nft monitor` in the router's
 * namespace (started before the clock) announces the map element; then
 * DisassociateFloatingIp (untimed) until DOWN and the element is gone. Baseline: a scratch
 * namespace with a `qre` (a veth) loaded with the agent's table for the router before the
 * association (rendered by the agent's routerRuleset from its spec), then the two commands
 * the agent runs: one `nft -f` of the table with the mapping and `ip addr add <fip>/32 dev qre`,
 * until both ended and the monitor there announced the element. In turns, the control plane
 * first (the baseline replays its state), after one warm-up of both; medians.
 */
export async function fipAssoc(rounds: number, progress: (msg: string) => void): Promise<FipAssocResult> {
  let c: NetCluster | undefined;
  let routerNs: string | undefined;
  const monitors: NftMonitor[] = [];
  const abort = new AbortController();
  try {
    makeNamespace(HOST, "192.0.2.41");
    makeNamespace(OUT);
    makeNamespace(SCRATCH);
    sh(["ip", "-n", HOST, "link", "add", PHYS, "type", "veth", "peer", "name", "eth0", "netns", OUT]);
    sh(["ip", "-n", HOST, "link", "set", PHYS, "up"]);
    sh(["ip", "-n", OUT, "addr", "add", `${UPSTREAM}/24`, "dev", "eth0"]);
    sh(["ip", "-n", OUT, "link", "set", "eth0", "up"]);
    sh(["ip", "-n", SCRATCH, "link", "add", ROUTER_EXTERNAL_DEVICE, "type", "veth", "peer", "name", `${ROUTER_EXTERNAL_DEVICE}p`]);
    sh(["ip", "-n", SCRATCH, "link", "set", `${ROUTER_EXTERNAL_DEVICE}p`, "up"]);
    sh(["ip", "-n", SCRATCH, "link", "set", ROUTER_EXTERNAL_DEVICE, "up"]);
    c = await startNetCluster("bench-net-fip", [HOST], () => new Map([["ext", PHYS]]));
    const cl = c;
    const agent = cl.agents[0]!;
    const fips = createClient(FloatingIpService, createGrpcTransport({ baseUrl: cl.cp.url }));
    const ext = await cl.nets.createVirtualNetwork({ name: "bench-fip-ext", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "198.51.100.20", rangeEnd: "198.51.100.99" } } });
    const net = await cl.nets.createVirtualNetwork({ name: "bench-fip-in", spec: { type: NetworkType.VXLAN, cidr: "10.58.0.0/24", router: { externalNetworkId: ext.id, snatEnabled: true } } });
    await poll(async () => ((await cl.nets.getVirtualNetwork({ id: net.id })).status?.router?.ready ? true : undefined), "the network's router ready on the host", 60_000, 100).catch(async (err: unknown) => {
      throw new Error(`${String(err)}; router: ${JSON.stringify((await cl.nets.getVirtualNetwork({ id: net.id })).status?.router)}`);
    });
    const rNs = routerNetns(net.id, HOST);
    routerNs = rNs;
    const port = await cl.ports.createPort({ name: "bench-fip-port", spec: { networkId: net.id, fixedIps: [FIXED] } });
    const fip = await fips.createFloatingIp({ externalNetworkId: ext.id });
    progress(`network: router ${rNs} ready; floating IP ${fip.address} for port ${FIXED} (setup, not timed)`);

    // The watch, open before any clock: the time each floating IP was reported ACTIVE / DOWN.
    const waiters = new Set<(state: FloatingIpState, at: number) => void>();
    const watch = fips.watchFloatingIps({}, { signal: abort.signal });
    void (async () => {
      for await (const u of watch) {
        if (u.floatingIp?.id !== fip.id) continue;
        const at = nowMs();
        for (const w of waiters) w(u.floatingIp.state, at);
      }
    })().catch(() => undefined);
    const reported = (state: FloatingIpState, ms = 60_000) => {
      let done: (at: number) => void = () => undefined;
      const p = new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`WatchFloatingIps: ${fip.address} not ${FloatingIpState[state]} within ${ms / 1000} s`));
        }, ms);
        done = (at) => {
          clearTimeout(timer);
          waiters.delete(w);
          resolve(at);
        };
      });
      const w = (s: FloatingIpState, at: number) => s === state && done(at);
      waiters.add(w);
      return p;
    };
    const routerMon = await startNftMonitor(rNs, "all");
    const scratchMon = await startNftMonitor(SCRATCH, "all");
    monitors.push(routerMon, scratchMon);
    const element = new RegExp(`^add element ip ${ROUTER_TABLE} fip_dnat \\{ ${fip.address.replace(/\./g, "\\.")} : ${FIXED.replace(/\./g, "\\.")} \\}`);
    const spec = async (): Promise<RouterDesired> => {
      const r = (await agent.routerHost!.listRouters()).find((x) => x.spec.routerId === net.id);
      if (!r) throw new Error(`the agent has no router ${net.id}`);
      return r.spec;
    };

    const active: number[] = [];
    const nftQ: number[] = [];
    const answers: number[] = [];
    const agentTook: number[] = [];
    const direct: number[] = [];
    const nftD: number[] = [];
    // Round 0 is a warm-up of both sides, not counted.
    for (let i = 0; i <= rounds; i++) {
      const before = await spec();
      if (before.floatingIps.length > 0) throw new Error(`round ${i}: the router still maps ${JSON.stringify(before.floatingIps)}`);
      const from = routerMon.mark();
      const isActive = reported(FloatingIpState.ACTIVE);
      const t0 = nowMs();
      const inNft = routerMon.waitFor(element, 60_000, from);
      inNft.catch(() => undefined);
      // When the agent took the mapping (its routers' state file has it, written before it touches the host): control plane vs agent.
      const took = watchStateFile(agent.stateDir, (text) => text.includes(`"floatingIp":"${fip.address}"`), "routers.json");
      const a = await fips.associateFloatingIp({ id: fip.id, portId: port.id });
      const answerMs = nowMs() - t0;
      const activeMs = (await isActive) - t0;
      const nftMs = (await inNft.finally(() => took.stop())) - t0;
      const tookMs = took.at() - t0;
      // It did work: the mapping is in the router's table and the address on its external leg.
      if (a.portId !== port.id || !mapped(rNs, fip.address, FIXED) || !hasAddress(rNs, fip.address)) throw new Error(`round ${i}: ACTIVE, but the router's namespace lacks the mapping or the /32 (nft map: ${mapped(rNs, fip.address, FIXED)}, address: ${hasAddress(rNs, fip.address)}); no number reported`);
      const after = await spec();
      if (!after.floatingIps.some((f) => f.floatingIp === fip.address && f.fixedIp === FIXED)) throw new Error(`round ${i}: the agent's router spec lacks the mapping`);

      // The baseline: the scratch namespace as the router was (untimed), then what the agent ran.
      await run(["ip", "netns", "exec", SCRATCH, "nft", "-f", "-"], routerRuleset(before));
      await run(["ip", "-n", SCRATCH, "addr", "flush", "dev", ROUTER_EXTERNAL_DEVICE]);
      if (mapped(SCRATCH, fip.address, FIXED)) throw new Error(`round ${i}: the scratch namespace maps the floating IP before its commands ran`);
      const script = routerRuleset(after);
      const fromD = scratchMon.mark();
      const t1 = nowMs();
      const seenD = scratchMon.waitFor(element, 60_000, fromD);
      seenD.catch(() => undefined);
      await run(["ip", "netns", "exec", SCRATCH, "nft", "-f", "-"], script);
      await run(["ip", "-n", SCRATCH, "addr", "add", `${fip.address}/32`, "dev", ROUTER_EXTERNAL_DEVICE]);
      const ended = nowMs() - t1;
      const seenMs = (await seenD) - t1;
      const directMs = Math.max(ended, seenMs);
      if (!mapped(SCRATCH, fip.address, FIXED) || !hasAddress(SCRATCH, fip.address)) throw new Error(`round ${i}: the baseline's commands left no mapping or /32 in the scratch namespace`);

      // Untimed: disassociated until DOWN and the mapping gone from the router.
      const isDown = reported(FloatingIpState.DOWN);
      await fips.disassociateFloatingIp({ id: fip.id });
      await isDown;
      await poll(async () => (!mapped(rNs, fip.address, FIXED) && !hasAddress(rNs, fip.address) ? true : undefined), `round ${i}: the mapping gone from the router after DisassociateFloatingIp`, 30_000, 50);
      progress(`network: floating IP ${i === 0 ? "warm-up" : `round ${i}/${rounds}`}: ACTIVE after ${activeMs.toFixed(0)} ms, in the router's nftables after ${nftMs.toFixed(0)} ms (AssociateFloatingIp answered at ${answerMs.toFixed(0)} ms, the agent had it at ${tookMs.toFixed(0)} ms); nft -f + ip addr add ${directMs.toFixed(0)} ms`);
      if (i === 0) continue;
      active.push(activeMs);
      nftQ.push(nftMs);
      answers.push(answerMs);
      agentTook.push(tookMs);
      direct.push(directMs);
      nftD.push(seenMs);
    }
    await fips.deleteFloatingIp({ id: fip.id });
    await cl.ports.deletePort({ id: port.id });
    await cl.nets.updateVirtualNetwork({ id: net.id, spec: {}, updateMask: { paths: ["spec.router"] } });
    await poll(async () => ((await agent.routerHost!.listRouters()).length === 0 ? true : undefined), "the router removed from the host", 30_000, 100);
    return {
      rounds,
      quantix: { activeMs: active, medianActiveMs: median(active), nftMs: nftQ, medianNftMs: median(nftQ), answerMs: answers, agentTookMs: agentTook },
      direct: { samplesMs: direct, medianMs: median(direct), nftMs: nftD },
      floatingIp: fip.address,
      fixedIp: FIXED,
    };
  } finally {
    abort.abort();
    for (const m of monitors) m.kill();
    await c?.stop();
    if (routerNs !== undefined) {
      try {
        sh(["ip", "netns", "del", routerNs]);
      } catch {
        // the agent deleted it with the router
      }
    }
    removeNamespaces();
  }
}
