import { NodeStatus_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VmAffinityRule } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { matchesLabels } from "../labels.js";
import { allocatableOf, type ClusterView, type Demand, type NodeLoad, type SchedulableVm } from "./cluster.js";
import { selectorMatches } from "./label-selector.js";
import { blockingTaint, effectName } from "./taints.js";

/** Why a filter rejected a node. Capacity rejections carry numbers so the explanation can aggregate them. */
export type Rejection =
  | { readonly kind: "memory"; readonly needMib: number; readonly freeMib: number }
  | { readonly kind: "cpu"; readonly needVcpus: number; readonly freeVcpus: number }
  | { readonly kind: "other"; readonly text: string };

/** What every filter may read while one VM is scheduled; computed once per VM. */
export interface FilterContext {
  readonly vm: SchedulableVm;
  readonly demand: Demand;
  readonly cluster: ClusterView;
  /** Whether the control plane can drive a node's hypervisor; absent means every node. */
  readonly isConnected?: ((nodeId: string) => boolean) | undefined;
  /** Hard affinity rules with whether any VM in the cluster matches each (a first VM of a group may go anywhere). */
  readonly hardAffinity: readonly { readonly rule: VmAffinityRule; readonly anyMatch: boolean }[];
}

/** A filter: undefined when the node may take the VM, else why not. */
export type Filter = (ctx: FilterContext, node: Node, load: NodeLoad) => Rejection | undefined;

const other = (text: string): Rejection => ({ kind: "other", text });

/** The node is READY (heartbeating, not in maintenance or draining). */
export const readyFilter: Filter = (_ctx, node) => {
  const phase = node.status?.phase ?? NodeStatus_Phase.UNKNOWN;
  return phase === NodeStatus_Phase.READY ? undefined : other(`not ready (${NodeStatus_Phase[phase]})`);
};

/** An operator has not disabled the node. */
export const schedulableFilter: Filter = (_ctx, node) => (node.spec?.schedulable ? undefined : other("not schedulable"));

/** The control plane has a hypervisor driver for the node. */
export const connectedFilter: Filter = (ctx, node) => (!ctx.isConnected || ctx.isConnected(node.id) ? undefined : other("no connected hypervisor"));

/** required_node_ids (when set) names the node, and excluded_node_ids does not. */
export const nodeIdsFilter: Filter = (ctx, node) => {
  const pl = ctx.vm.spec?.placement;
  if (pl?.requiredNodeIds.length && !pl.requiredNodeIds.includes(node.id)) return other("not in required_node_ids");
  if (pl?.excludedNodeIds.includes(node.id)) return other("in excluded_node_ids");
  return undefined;
};

/** The node reaches every volume the VM's disks name (a local pool's volume is on one node). */
export const volumeFilter: Filter = (ctx, node) => (!ctx.vm.volumeNodeIds || ctx.vm.volumeNodeIds.includes(node.id) ? undefined : other("does not hold the VM's volumes"));

/** The node's labels carry every node_selector pair. */
export const nodeSelectorFilter: Filter = (ctx, node) => {
  const sel = ctx.vm.spec?.placement?.nodeSelector;
  return !sel || matchesLabels(node.labels, sel) ? undefined : other("node_selector does not match");
};

/**
 * The capabilities a NIC on a port needs of its node: the agent's network data plane
 * (VMCP_NETWORK=on) with VXLAN (the overlay), security groups (nftables) and DHCP.
 */
export const PORT_NIC_CAPABILITIES = ["network-vxlan", "network-security-groups", "network-dhcp"] as const;

/**
 * The node's hypervisor declares every capability the VM requires: those its placement
 * names, and those its spec implies (cloud-init data needs "cloud-init": the node's
 * agent builds the seed disk; a NIC on a port needs the network data plane).
 */
export const capabilitiesFilter: Filter = (ctx, node) => {
  const caps = node.status?.hypervisor?.capabilities ?? [];
  const required = [
    ...(ctx.vm.spec?.placement?.requiredCapabilities ?? []),
    ...(ctx.vm.spec?.provisioning?.cloudInit ? ["cloud-init"] : []),
    ...(ctx.vm.spec?.nics.some((n) => n.portId !== "") ? PORT_NIC_CAPABILITIES : []),
  ];
  const missing = required.find((c) => !caps.includes(c));
  return missing === undefined ? undefined : other(`missing capability '${missing}'`);
};

/** No NO_SCHEDULE or NO_EXECUTE taint the VM does not tolerate. */
export const taintFilter: Filter = (ctx, node) => {
  const taint = blockingTaint(node.spec?.taints ?? [], ctx.vm.spec?.placement?.tolerations ?? []);
  return taint ? other(`tainted ${taint.key}${taint.value ? `=${taint.value}` : ""}:${effectName(taint.effect)}`) : undefined;
};

/** Memory: what the node has not given out covers the VM. */
export const memoryFilter: Filter = (ctx, node, load) => {
  const free = allocatableOf(node).memoryMib - load.memoryMib;
  return free >= ctx.demand.memoryMib ? undefined : { kind: "memory", needMib: ctx.demand.memoryMib, freeMib: Math.max(0, free) };
};

/** CPU: the vCPUs the node has not given out cover the VM. */
export const cpuFilter: Filter = (ctx, node, load) => {
  const free = allocatableOf(node).vcpus - load.vcpus;
  return free >= ctx.demand.vcpus ? undefined : { kind: "cpu", needVcpus: ctx.demand.vcpus, freeVcpus: Math.max(0, free) };
};

/**
 * Hard VM affinity: the node hosts a VM the rule's selector matches (unless none exists
 * anywhere yet, so a group's first VM can start). Hard anti-affinity: the node hosts none.
 */
export const affinityFilter: Filter = (ctx, _node, load) => {
  for (const { rule, anyMatch } of ctx.hardAffinity) {
    const here = hostsMatch(load, rule, ctx.vm.id);
    if (rule.anti && here) return other("VM anti-affinity (a matching VM is there)");
    if (!rule.anti && !here && anyMatch) return other("VM affinity (no matching VM there)");
  }
  return undefined;
};

/** Whether a node hosts a VM (other than `selfId`) that a rule's selector matches. */
export function hostsMatch(load: NodeLoad, rule: VmAffinityRule, selfId: string): boolean {
  return load.vms.some((v) => v.id !== selfId && selectorMatches(rule.selector, v.labels));
}

/** Every filter, cheapest first; a node's reason is the first that rejects it. */
export const FILTERS: readonly Filter[] = [
  readyFilter,
  schedulableFilter,
  connectedFilter,
  nodeIdsFilter,
  volumeFilter,
  nodeSelectorFilter,
  capabilitiesFilter,
  taintFilter,
  memoryFilter,
  cpuFilter,
  affinityFilter,
];
