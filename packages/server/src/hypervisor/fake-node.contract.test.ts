import { FakeNode } from "../services/migration-test-kit.js";
import { directBootSpec } from "./agent-hypervisor-test-kit.js";
import { hypervisorPortContract } from "./hypervisor-port.contract.js";

// The test fake of the migration logic's tests (services/migration-test-kit.ts). What it
// does not model is skipped below, so that it is plain what its tests take for granted.
const WHY = "FakeNode keeps one power word per VM for the migration tests: it";
hypervisorPortContract(
  "FakeNode (the migration tests' fake)",
  async () => {
    const peers = new Map<string, FakeNode>();
    const node = new FakeNode("a", peers);
    return {
      port: node,
      peer: new FakeNode("b", peers),
      spec: directBootSpec(),
      crash: async (vmId) => void node.vms.set(vmId, "crashed"),
      cleanup: async () => undefined,
    };
  },
  {
    skip: {
      "off-noop": `${WHY} marks any defined VM shut down on shutdownVM, even one never started`,
      capabilities: `${WHY} performs pause, reboot and suspend although it declares none of them`,
      notifications: `${WHY} never calls onChange listeners (its tests drive the services directly)`,
      crash: `${WHY} reports no crash reason`,
    },
  },
);
