import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { SecurityGroupRuleDirection, SecurityGroupRuleProtocol } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { hostRuleset, sgName, SG_TABLE } from "@quantix/agent";
import { startNetCluster, type NetCluster } from "./net-cluster.js";
import { makeJoinedHosts, makeNamespace, NET_PREFIX, poll, readHostState, removeNamespaces, run, sh, startNftMonitor, watchStateFile, type NftMonitor } from "./net-hosts.js";
import { median, nowMs } from "./stats.js";

/** A security-group rule reaching every host: through the control plane, and one `nft -f` per host. */
export interface SgChangeResult {
  readonly ports: number;
  readonly hosts: number;
  readonly rounds: number;
  /** Per round: when the last host showed the rule, and each host's time. */
  readonly quantix: { readonly samplesMs: number[]; readonly medianMs: number; readonly perHostMs: number[][]; readonly answerMs: number[]; readonly agentsHadRuleMs: number[][] };
  readonly direct: { readonly samplesMs: number[]; readonly medianMs: number; readonly perHostMs: number[][] };
  readonly setupMs: number;
}

const UNDERLAYS = ["192.0.2.21", "192.0.2.22", "192.0.2.23"];

/**
 * Row 2 of issue 14: `ports` VMs (SimulatedBackend) with one NIC each on one network,
 * spread over three namespace hosts (CreateVM's node_id, round robin), all in one security
 * group. Each round adds one ingress rule (TCP to a new port) with AddSecurityGroupRules
 * and waits until every host's `nft monitor` (started before the clock) announces the
 * rule in chain `sg_<12 hex>_in` of `inet quantix`: the commit of the transaction that has it. Baseline: three more namespaces loaded with the hosts' rulesets as they were
 * before the round (rebuilt from the agents' state files), then one `nft -f` per host in
 * parallel with the ruleset each agent wrote for the rule (the agent replaces its tables
 * whole in one transaction), watched the same way. In turns, the control plane first,
 * after one warm-up round of both.
 */
export async function sgChange(ports: number, rounds: number, progress: (msg: string) => void): Promise<SgChangeResult> {
  const hosts = makeJoinedHosts(`${NET_PREFIX}s`, UNDERLAYS);
  const mirrors = hosts.map((_, i) => makeNamespace(`${NET_PREFIX}m${i}`));
  let c: NetCluster | undefined;
  const stops: (() => void)[] = [];
  try {
    const setupStart = nowMs();
    c = await startNetCluster("bench-net-sg", hosts);
    const cl = c;
    const net = await cl.nets.createVirtualNetwork({ name: "bench-sg", spec: { type: NetworkType.VXLAN, cidr: "10.88.0.0/24" } });
    const group = await cl.groups.createSecurityGroup({ name: "bench-sg" });
    const chain = `sg_${sgName(group.id)}_in`;
    progress(`network: ${ports} VMs with a NIC on one network, in one security group, over ${hosts.length} hosts (setup, not timed)`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < ports; i = next++) {
          await cl.vms.createVM({ name: `sg-vm${i}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, nics: [{ id: "eth0", networkId: net.id, securityGroups: [group.id] }] }, startOnCreate: true, nodeId: cl.nodeIds[i % cl.nodeIds.length]! });
        }
      }),
    );
    await poll(async () => {
      const { ports: list } = await cl.ports.listPorts({ networkId: net.id, states: [PortState.ACTIVE], pageSize: 1000 });
      return list.filter((p) => p.spec?.securityGroupIds.includes(group.id)).length === ports ? true : undefined;
    }, `${ports} ports ACTIVE on their hosts`, 150_000, 250);
    // And every VM started, so no VM's start is still in the control plane's queues when the clock runs.
    await poll(async () => ((await cl.vms.listVMs({ states: [VmStatus_State.RUNNING], pageSize: 1000 })).vms.length >= ports ? true : undefined), `${ports} VMs RUNNING`, 120_000, 250);
    const setupMs = nowMs() - setupStart;
    progress(`network: ${ports} ports ACTIVE and their VMs RUNNING after ${(setupMs / 1000).toFixed(1)} s`);

    const dirs = cl.agents.map((a) => a.stateDir);
    // The baseline's hosts start as the agents' hosts are now.
    for (const [i, ns] of mirrors.entries()) sh(["ip", "netns", "exec", ns, "nft", "-f", "-"], hostRuleset(readHostState(dirs[i]!)));
    // `nft monitor` per namespace, started before any clock: the rule shows as "add rule inet quantix sg_…_in … dport N accept".
    const hostWatch = await Promise.all(hosts.map((ns) => startNftMonitor(ns)));
    const mirrorWatch = await Promise.all(mirrors.map((ns) => startNftMonitor(ns)));
    stops.push(() => [...hostWatch, ...mirrorWatch].forEach((w) => w.kill()));
    const seen = (which: NftMonitor[], port: number, t0: number) => Promise.all(which.map(async (w) => (await w.waitFor(new RegExp(`^add rule inet ${SG_TABLE} ${chain} .*dport ${port} accept`))) - t0));

    const q: number[] = [];
    const qHosts: number[][] = [];
    const answers: number[] = [];
    const agentsTook: number[][] = [];
    const d: number[] = [];
    const dHosts: number[][] = [];
    // Round 0 is a warm-up (both sides), as the other sections' first runs: not counted.
    for (let r = 0; r <= rounds; r++) {
      const port = 2000 + r;
      const t0 = nowMs();
      const shown = seen(hostWatch, port, t0);
      // When each agent took the rule: its state file has it.
      const took = dirs.map((dir) => watchStateFile(dir, (text) => text.includes(`"portMin":${port},`)));
      await cl.groups.addSecurityGroupRules({ securityGroupId: group.id, rules: [{ direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.TCP, portRangeMin: port, remote: { case: "remoteCidr", value: "0.0.0.0/0" } }] });
      const answer = nowMs() - t0;
      const per = await shown.finally(() => took.forEach((w) => w.stop()));
      const agents = took.map((w) => w.at() - t0);

      const scripts = dirs.map((dir) => hostRuleset(readHostState(dir)));
      const t1 = nowMs();
      const shownDirect = seen(mirrorWatch, port, t1);
      await Promise.all(mirrors.map((ns, i) => run(["ip", "netns", "exec", ns, "nft", "-f", "-"], scripts[i])));
      const perDirect = await shownDirect;
      progress(`network: rule ${r === 0 ? "warm-up" : `${r}/${rounds}`}: on all ${hosts.length} hosts via the control plane after ${Math.max(...per).toFixed(0)} ms (AddSecurityGroupRules answered at ${answer.toFixed(0)} ms, the agents had it at ${agents.map((v) => v.toFixed(0)).join(", ")} ms), one nft -f per host ${Math.max(...perDirect).toFixed(0)} ms`);
      if (r === 0) continue;
      answers.push(answer);
      agentsTook.push(agents);
      qHosts.push(per);
      q.push(Math.max(...per));
      dHosts.push(perDirect);
      d.push(Math.max(...perDirect));
    }
    return { ports, hosts: hosts.length, rounds, quantix: { samplesMs: q, medianMs: median(q), perHostMs: qHosts, answerMs: answers, agentsHadRuleMs: agentsTook }, direct: { samplesMs: d, medianMs: median(d), perHostMs: dHosts }, setupMs };
  } finally {
    for (const s of stops) s();
    await c?.stop();
    removeNamespaces();
  }
}
