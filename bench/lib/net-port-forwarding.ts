import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { bridgeName, hostRuleset, tapName, vxlanName, type HostNetworkState } from "@quantix/agent";
import { startNetCluster, type NetCluster } from "./net-cluster.js";
import { makeNamespace, NET_PREFIX, poll, readHostState, removeNamespaces, run, sh, startTapProbe, watchStateFile, type TapProbe } from "./net-hosts.js";
import { median, nowMs } from "./stats.js";

/** Port to forwarding: through the control plane, and the agent's commands for one port run directly. */
export interface PortForwardingResult {
  readonly runs: number;
  readonly quantix: { readonly samplesMs: number[]; readonly medianMs: number; readonly createVmAnswerMs: number[]; readonly agentHadPortMs: number[] };
  readonly direct: { readonly samplesMs: number[]; readonly medianMs: number; readonly commandsEndedMs: number[][] };
  /** The commands the baseline times for one port (the nft script's size in bytes, not its text). */
  readonly directCommands: string[];
}

const UNDERLAY = "192.0.2.10";
const CIDR = "10.77.0.0/24";

/**
 * Row 1 of issue 14. Quantix: CreatePort (a fixed MAC and address, the project's default
 * security group), then CreateVM (start_on_create, on the one node) with a NIC naming
 * the port: a port is set up on a host only when a VM on that host uses it. The clock
 * runs from CreatePort until a probe playing the VM on the port's TAP gets its ping
 * answered by the host (tap-probe.py: the TAP exists, nft filters it, ARP and ICMP get
 * through). Baseline, in a second namespace built as a copy of the host (bridge, VXLAN,
 * service address, the same earlier TAPs and ruleset): what the agent runs for a new
 * port, `ip tuntap add`, `ip link set … master … up` and one `nft -f` of the very ruleset
 * the agent wrote for that port (rebuilt from the agent's state file), then the same
 * probe. In turns: the control plane's run first (the baseline replays its state).
 */
export async function portForwarding(runs: number, progress: (msg: string) => void): Promise<PortForwardingResult> {
  const host = makeNamespace(`${NET_PREFIX}a`, UNDERLAY);
  const mirror = makeNamespace(`${NET_PREFIX}b`, UNDERLAY);
  const probes: TapProbe[] = [];
  let c: NetCluster | undefined;
  try {
    c = await startNetCluster("bench-net-port", [host]);
    const cl = c;
    const nodeId = cl.nodeIds[0]!;
    const agentDir = cl.agents[0]!.stateDir;
    // The DHCP range ends below the bench's fixed addresses (.100 on): the network's DHCP port takes a random one of the range.
    const net = await cl.nets.createVirtualNetwork({ name: "bench-port", spec: { type: NetworkType.VXLAN, cidr: CIDR, dhcp: { enabled: true, rangeStart: "10.77.0.2", rangeEnd: "10.77.0.99" } } });

    const portOf = (i: number) => ({ mac: `02:00:00:77:00:${(i + 16).toString(16).padStart(2, "0")}`, ip: `10.77.0.${100 + i}` });
    const makeVm = async (i: number, portId: string, mac: string) =>
      cl.vms.createVM({ name: `bench-vm${i}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, nics: [{ id: "eth0", portId, macAddress: mac }] }, startOnCreate: true, nodeId });
    // Let each VM finish starting, so the next measurement starts from a quiet control plane.
    const running = (id: string) => poll(async () => ((await cl.vms.getVM({ id })).status?.state === VmStatus_State.RUNNING ? true : undefined), `VM ${id} RUNNING`, 30_000, 20);

    progress("network: warm-up (the network, its DHCP port and dnsmasq set up on the host)");
    const w = portOf(0);
    const first = await cl.ports.createPort({ name: "bench-p0", spec: { networkId: net.id, macAddress: w.mac, fixedIps: [w.ip] } });
    await running((await makeVm(0, first.id, w.mac)).id);
    const warm = readHostState(agentDir);
    const svc = serviceAddress(warm, net.id);
    if (!svc) throw new Error("the host has no service address for the network after the warm-up");
    copyHost(mirror, warm, net.id);

    const viaCp = async (i: number): Promise<{ ms: number; answerMs: number; appliedMs: number; tap: string; mac: string; ip: string }> => {
      const { mac, ip } = portOf(i);
      const probe = await startTapProbe(host);
      probes.push(probe);
      const t0 = nowMs();
      const port = await cl.ports.createPort({ name: `bench-p${i}`, spec: { networkId: net.id, macAddress: mac, fixedIps: [ip] } });
      const tap = tapName(port.id);
      const answered = probe.check(tap, mac, ip, svc);
      answered.catch(() => undefined);
      // When the agent took the port: its state file names it.
      const took = watchStateFile(agentDir, (text) => text.includes(port.id));
      const vm = await makeVm(i, port.id, mac);
      const answerMs = nowMs() - t0;
      const ms = (await answered.finally(() => took.stop())) - t0;
      const appliedMs = took.at() - t0;
      probe.kill();
      await running(vm.id);
      return { ms, answerMs, appliedMs, tap, mac, ip };
    };

    const q: number[] = [];
    const answers: number[] = [];
    const applied: number[] = [];
    const directMarks: number[][] = [];
    const d: number[] = [];
    let commands: string[] = [];
    for (let i = 1; i <= runs; i++) {
      const r = await viaCp(i);
      q.push(r.ms);
      answers.push(r.answerMs);
      applied.push(r.appliedMs);
      // The baseline: the agent's commands for this port, its ruleset as the agent's state now has it.
      const state = readHostState(agentDir);
      const spec = state.networks[net.id]!.spec;
      const script = hostRuleset(state);
      const steps: [string[], string?][] = [
        [["ip", "-n", mirror, "tuntap", "add", "dev", r.tap, "mode", "tap"]],
        [["ip", "-n", mirror, "link", "set", "dev", r.tap, "mtu", String(spec.mtu), "master", bridgeName(net.id), "up"]],
        [["ip", "netns", "exec", mirror, "nft", "-f", "-"], script],
      ];
      commands = steps.map(([a, input]) => a.join(" ") + (input ? ` (${input.length} bytes)` : ""));
      const probe = await startTapProbe(mirror);
      probes.push(probe);
      const t0 = nowMs();
      const answered = probe.check(r.tap, r.mac, r.ip, svc);
      answered.catch(() => undefined);
      const marks: number[] = [];
      for (const [args, input] of steps) {
        await run(args, input);
        marks.push(nowMs() - t0);
      }
      d.push((await answered) - t0);
      directMarks.push(marks);
      probe.kill();
      progress(`network: port ${i}/${runs}: via the control plane ${q.at(-1)!.toFixed(0)} ms (CreateVM answered at ${r.answerMs.toFixed(0)} ms, the agent had the port at ${r.appliedMs.toFixed(0)} ms), direct commands ${d.at(-1)!.toFixed(0)} ms (the commands ended at ${marks.map((m) => m.toFixed(0)).join(", ")} ms)`);
    }
    return { runs, quantix: { samplesMs: q, medianMs: median(q), createVmAnswerMs: answers, agentHadPortMs: applied }, direct: { samplesMs: d, medianMs: median(d), commandsEndedMs: directMarks }, directCommands: commands };
  } finally {
    for (const p of probes) p.kill();
    await c?.stop();
    removeNamespaces();
  }
}

const serviceAddress = (s: HostNetworkState, networkId: string): string | undefined => s.networks[networkId]?.spec.subnets[0]?.serviceAddress;

/** Builds in `ns` what the host has for the network (untimed): its bridge, address, VXLAN, TAPs and ruleset. */
function copyHost(ns: string, state: HostNetworkState, networkId: string): void {
  const n = state.networks[networkId]!.spec;
  const br = bridgeName(networkId);
  const vx = vxlanName(networkId);
  const prefix = n.subnets[0]!.cidr.split("/")[1]!;
  sh(["ip", "-n", ns, "link", "add", "name", br, "type", "bridge", "nf_call_iptables", "1", "stp_state", "0"]);
  sh(["ip", "-n", ns, "link", "set", "dev", br, "mtu", String(n.mtu), "up"]);
  sh(["ip", "-n", ns, "addr", "add", `${n.subnets[0]!.serviceAddress!}/${prefix}`, "dev", br]);
  sh(["ip", "-n", ns, "link", "add", "name", vx, "type", "vxlan", "id", String(n.vni), "local", n.localUnderlay, "dstport", "4789", "nolearning"]);
  sh(["ip", "-n", ns, "link", "set", "dev", vx, "mtu", String(n.mtu), "master", br, "up"]);
  for (const p of n.ports) {
    sh(["ip", "-n", ns, "tuntap", "add", "dev", tapName(p.portId), "mode", "tap"]);
    sh(["ip", "-n", ns, "link", "set", "dev", tapName(p.portId), "mtu", String(n.mtu), "master", br, "up"]);
  }
  sh(["ip", "netns", "exec", ns, "nft", "-f", "-"], hostRuleset(state));
}
