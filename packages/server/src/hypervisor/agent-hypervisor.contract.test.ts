import { SimulatedBackend, startAgentServer, VmManager } from "@quantix/agent";
import { silentLogger } from "@quantix/rpc";
import { httpAgentConnection } from "./agent-connection.js";
import { connectedAgentHypervisor, directBootSpec } from "./agent-hypervisor-test-kit.js";
import { hypervisorPortContract } from "./hypervisor-port.contract.js";

// The port over the network to a host agent (a real vmm.v1 server on port 0, gRPC over
// h2c) whose backend is the simulator: the agent's rules, the control plane's adapter.
hypervisorPortContract("AgentHypervisor over an agent with the simulated backend", async () => {
  const backend = new SimulatedBackend({ bootMs: 10, consoleIntervalMs: 20 });
  const manager = new VmManager({ backend });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, graceMs: 100 });
  const port = await connectedAgentHypervisor(httpAgentConnection(server.url), backend.type);
  return {
    port,
    spec: directBootSpec(),
    bootMarker: "simulated console: booted",
    crash: async (vmId) => backend.simulateCrash(vmId, "simulated fault for the contract"),
    async cleanup() {
      await port.close();
      await server.close();
      await backend.close();
    },
  };
});
