import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import type { Backend } from "../backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";

/** An agent a test started: its backend, listener and a gRPC client to it. */
export interface TestAgent {
  readonly backend: Backend;
  readonly server: AgentServer;
  readonly client: Client<typeof VmService>;
}

/** Agents a test starts on port 0, and their cleanup: every VM deleted, every listener closed. */
export class TestAgents {
  private readonly agents: TestAgent[] = [];

  /** Starts an agent serving `backend` on 127.0.0.1. */
  async start(backend: Backend): Promise<TestAgent> {
    const manager = new VmManager({ backend });
    await manager.start();
    const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger });
    const agent = { backend, server, client: createClient(VmService, createGrpcTransport({ baseUrl: server.url })) };
    this.agents.push(agent);
    return agent;
  }

  /** Deletes every VM (force: QEMU processes end) and closes every agent. */
  async closeAll(): Promise<void> {
    for (const a of this.agents.splice(0)) {
      for (const vm of (await a.client.listVms({}).catch(() => ({ vms: [] }))).vms) await a.client.deleteVm({ vmId: vm.vmId, force: true }).catch(() => undefined);
      await a.server.close();
      await a.backend.close();
    }
  }
}
