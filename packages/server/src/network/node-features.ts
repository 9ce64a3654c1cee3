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
 * network type no node supports is refused with the reason.
 */
export async function featureSupport(store: Store, network: (nodeId: string) => NodeNetwork | undefined, feature: string): Promise<{ supported: string[]; reasons: string[] }> {
  const supported: string[] = [];
  const lacking: { id: string; name: string }[] = [];
  for await (const n of allOf(store.of(NODE_KIND))) {
    if ((n.status?.hypervisor?.capabilities ?? []).includes(feature)) supported.push(n.id);
    else lacking.push({ id: n.id, name: n.hostname });
  }
  const reasons = await Promise.all(
    lacking.slice(0, NAMED_MAX).map(async ({ id, name }) => {
      const nn = network(id);
      const label = `node '${name || id}'`;
      if (!nn) return `${label}: no network data plane (its agent runs without VMCP_NETWORK=on, or is not connected)`;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), PROBE_TIMEOUT_MS)));
      try {
        const caps = await Promise.race([nn.capabilities(), timeout]);
        const f = caps?.features.find((x) => x.name === feature);
        return `${label}: ${f ? f.reason : caps ? `its agent does not know the feature ${feature}` : `its agent did not answer within ${PROBE_TIMEOUT_MS} ms`}`;
      } catch (err) {
        return `${label}: its agent did not tell its capabilities: ${String((err as Error).message ?? err)}`;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  if (lacking.length > NAMED_MAX) reasons.push(`and ${lacking.length - NAMED_MAX} more node(s)`);
  return { supported, reasons };
}
