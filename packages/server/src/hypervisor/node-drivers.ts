import type { HypervisorPort } from "@quantix/core";

/**
 * The hypervisors the control plane can reach, by node id: an AgentHypervisor for each
 * registered agent (over the network) and each demo node (its simulated host, in process).
 */
export class NodeDrivers {
  private readonly drivers = new Map<string, HypervisorPort>();
  private readonly listeners = new Set<(nodeId: string, vmId: string) => void>();
  private readonly unsubscribe = new Map<string, () => void>();

  /** Connects a node's hypervisor. */
  attach(nodeId: string, driver: HypervisorPort): void {
    this.detach(nodeId);
    this.drivers.set(nodeId, driver);
    this.unsubscribe.set(nodeId, driver.onChange((vmId) => this.listeners.forEach((l) => l(nodeId, vmId))));
  }

  /** Disconnects a node's hypervisor. */
  detach(nodeId: string): void {
    this.unsubscribe.get(nodeId)?.();
    this.unsubscribe.delete(nodeId);
    this.drivers.delete(nodeId);
  }

  get(nodeId: string): HypervisorPort | undefined {
    return this.drivers.get(nodeId);
  }

  has(nodeId: string): boolean {
    return this.drivers.has(nodeId);
  }

  entries(): IterableIterator<[string, HypervisorPort]> {
    return this.drivers.entries();
  }

  /** Calls `listener` whenever a VM's observed state may have changed on any node. */
  onChange(listener: (nodeId: string, vmId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
