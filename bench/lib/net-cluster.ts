import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { TestAgent } from "@quantix/testing";
import { poll } from "./net-hosts.js";
import { startServer, type Server } from "./proc.js";

/**
 * A control plane process (memory store, CPU 0) and one TestAgent per namespace host
 * (SimulatedBackend, network data plane on, in this process), each registered as a READY
 * node with the network capabilities, cpu overcommit raised so a few dozen 1-vCPU VMs fit
 * on this small machine.
 */
export interface NetCluster {
  readonly cp: Server;
  readonly agents: TestAgent<SimulatedBackend>[];
  /** Node ids, in the order of the namespaces given. */
  readonly nodeIds: string[];
  readonly vms: Client<typeof VMService>;
  readonly nets: Client<typeof VirtualNetworkService>;
  readonly ports: Client<typeof PortService>;
  readonly groups: Client<typeof SecurityGroupService>;
  stop(): Promise<void>;
}

/** Per host (by index), the physical networks its agent maps (name → interface in its namespace); none by default. */
export type PhysicalNetworksOf = (i: number) => ReadonlyMap<string, string> | undefined;

export async function startNetCluster(name: string, namespaces: readonly string[], physicalNetworksOf: PhysicalNetworksOf = () => undefined): Promise<NetCluster> {
  const dir = mkdtempSync("/tmp/qx-bench-net-");
  const agents: TestAgent<SimulatedBackend>[] = [];
  let cp: Server | undefined;
  const stop = async () => {
    for (const a of agents) {
      await a.stop().catch(() => undefined);
      await a.backend.close().catch(() => undefined);
    }
    await cp?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    cp = await startServer(name, "packages/server/src/main.ts", [], { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info", QUANTIX_SHUTDOWN_GRACE_MS: "2000" });
    const transport = createGrpcTransport({ baseUrl: cp.url });
    const nodes = createClient(NodeService, transport);
    for (const [i, ns] of namespaces.entries()) {
      // resyncMs 0: the data plane's 30 s self-repair pass would land in some runs and not others.
      const physicalNetworks = physicalNetworksOf(i);
      const a = new TestAgent(new SimulatedBackend({ bootMs: 20 }), join(dir, `agent${i}`), `${name}-${i}`, { heartbeatMs: 1000, network: { netns: ns, resyncMs: 0, ...(physicalNetworks ? { physicalNetworks } : {}) } });
      agents.push(a);
      await a.start(cp.url);
    }
    const nodeIds = await poll(async () => {
      const list = (await nodes.listNodes({})).nodes;
      const ids = agents.map((a) => list.find((n) => n.hostname === a.name && n.status?.phase === NodeStatus_Phase.READY && n.status.hypervisor?.capabilities.includes("network-vxlan"))?.id);
      return ids.every((id) => id !== undefined) ? (ids as string[]) : undefined;
    }, "the agents registered as READY nodes with network-vxlan");
    for (const id of nodeIds) await nodes.updateNode({ id, spec: { overcommit: { cpuRatio: 32 } }, updateMask: { paths: ["spec.overcommit"] } });
    return {
      cp,
      agents,
      nodeIds,
      vms: createClient(VMService, transport),
      nets: createClient(VirtualNetworkService, transport),
      ports: createClient(PortService, transport),
      groups: createClient(SecurityGroupService, transport),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
