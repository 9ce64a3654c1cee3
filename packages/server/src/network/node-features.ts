import { allOf, NODE_KIND, type Store } from "@quantix/core";
import type { NodeNetwork } from "./node-network.js";

/** How long a node's agent is given to tell its network capabilities when a create needs them. */
const PROBE_TIMEOUT_MS = 2_000;
/** Nodes named in a refusal, at most. */
const NAMED_MAX = 10;

/**
 * Which nodes have a network data-plane feature (e.g. "network-vlan"), from the
 * capabilities they registered, and, for those that do not, why, in the words of their
 * agents' probes (GetNetworkCapabilities) when this replica reaches them, so that a
 * network type no node supports is refused with the reason. With `physicalNetwork`, a
 * node counts only when its agent also maps that physical network (an EXTERNAL network's
 * `spec.physical_network`).
 */
export async function featureSupport(
  store: Store,
  network: (nodeId: string) => NodeNetwork | undefined,
  feature: string,
  physicalNetwork?: string,
): Promise<{ supported: string[]; reasons: string[] }> {
  const supported: string[] = [];
  const reasons: string[] = [];
  const nodes: { id: string; label: string; has: boolean }[] = [];
  for await (const n of allOf(store.of(NODE_KIND))) nodes.push({ id: n.id, label: `node '${n.hostname || n.id}'`, has: (n.status?.hypervisor?.capabilities ?? []).includes(feature) });
  const asked = await Promise.all(
    nodes.map(async (n) => {
      // A node that has the feature counts at once unless a physical network must be checked.
      if (n.has && physicalNetwork === undefined) return { n, ok: true, why: "" };
      const nn = network(n.id);
      if (!nn) return { n, ok: false, why: `${n.label}: no network data plane (its agent runs without VMCP_NETWORK=on, or is not connected)` };
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), PROBE_TIMEOUT_MS)));
      try {
        const caps = await Promise.race([nn.capabilities(), timeout]);
        if (!caps) return { n, ok: false, why: `${n.label}: its agent did not answer within ${PROBE_TIMEOUT_MS} ms` };
        const f = caps.features.find((x) => x.name === feature);
        if (!f?.available) return { n, ok: false, why: `${n.label}: ${f ? f.reason : `its agent does not know the feature ${feature}`}` };
        if (physicalNetwork !== undefined && !caps.physicalNetworks.includes(physicalNetwork)) {
          return { n, ok: false, why: `${n.label}: maps no physical network '${physicalNetwork}' (it maps ${caps.physicalNetworks.map((p) => `'${p}'`).join(", ") || "none"}; VMCP_NETWORK_PHYSICAL_NETWORKS)` };
        }
        return { n, ok: true, why: "" };
      } catch (err) {
        return { n, ok: false, why: `${n.label}: its agent did not tell its capabilities: ${String((err as Error).message ?? err)}` };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  for (const a of asked) (a.ok ? supported.push(a.n.id) : reasons.push(a.why));
  if (reasons.length > NAMED_MAX) reasons.splice(NAMED_MAX, reasons.length - NAMED_MAX, `and ${reasons.length - NAMED_MAX} more node(s)`);
  return { supported, reasons };
}
