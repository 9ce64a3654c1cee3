import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { GUEST_TICK, until, type TestServer } from "@quantix/testing";

/** Helpers of the live-migration tests on real agents: a node ready to migrate, and the test guest's counter seen through the API. */

/** The node named `name`, once READY and its agent attached with the "live-migration" capability. */
export function migratableNode(s: TestServer, name: string): Promise<Node> {
  return until(async () => {
    const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === name);
    return n?.status?.phase === Phase.READY && s.cp.agents?.get(n.id)?.capabilities.has("live-migration") ? n : undefined;
  }, `node ${name} READY with live-migration`, 30_000);
}

/** The test guest's last counter value on the VM's console (GetConsoleOutput, wherever the VM runs now); 0 before the first. */
export async function lastTick(s: TestServer, vmId: string): Promise<number> {
  const out = new TextDecoder().decode((await s.vms.getConsoleOutput({ vmId, tailBytes: 65536 })).data);
  return Math.max(0, ...[...out.matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1])));
}

/** Waits (up to `ms`) until the VM's guest counts past `above`. */
export const ticking = (s: TestServer, vmId: string, above: number, ms: number) => until(async () => ((await lastTick(s, vmId)) > above ? true : undefined), `VM ${vmId} counting past ${above}`, ms, 200);
