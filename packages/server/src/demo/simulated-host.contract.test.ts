import { createSimulatedHost } from "@quantix/agent";
import { inProcessConnection } from "../hypervisor/agent-connection.js";
import { connectedAgentHypervisor, directBootSpec } from "../hypervisor/agent-hypervisor-test-kit.js";
import { hypervisorPortContract } from "../hypervisor/hypervisor-port.contract.js";
import { silentLogger } from "@quantix/rpc";

const KERNEL = "/var/lib/quantix/images/vmlinuz";

// The port as the demo nodes have it: AgentHypervisor in memory to a simulated host (the
// agent's VmManager over its simulated backend), as simulated-nodes.ts wires it.
hypervisorPortContract("a demo node's simulated host", async () => {
  const host = await createSimulatedHost({ bootMs: 10, running: [], log: silentLogger, images: [KERNEL] });
  const port = await connectedAgentHypervisor(inProcessConnection("demo-host", host), host.hypervisor.type);
  return {
    port,
    spec: directBootSpec(KERNEL),
    crash: async (vmId) => host.crash(vmId, "simulated fault for the contract"),
    async cleanup() {
      await port.close();
      await host.close();
    },
  };
});
