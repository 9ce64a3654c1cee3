import { create } from "@bufbuild/protobuf";
import { VmSpecSchema, type VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import type { AgentConnection } from "./agent-connection.js";
import { AgentHypervisor } from "./agent-hypervisor.js";

/**
 * An AgentHypervisor over `connection` as the control plane would have it once the
 * agent's watch has synced and its health report has given the capabilities (tests).
 */
export async function connectedAgentHypervisor(connection: AgentConnection, kind: string): Promise<AgentHypervisor> {
  const hv = new AgentHypervisor({ connection, node: `${kind}-test-host`, kind, version: "", capabilities: [], log: silentLogger });
  hv.start();
  await hv.connected();
  await hv.ping();
  return hv;
}

/** A small direct-boot VM spec (the simulator opens no file; QEMU boots the test guest from these). */
export function directBootSpec(kernelPath = "/boot/vmlinuz", initrdPath = "", cmdline = "console=ttyS0"): VmSpec {
  return create(VmSpecSchema, { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath, initrdPath, cmdline } } });
}
