import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { join } from "node:path";
import { QemuBackend } from "@quantix/agent";
import { GUEST_TICK, TestAgent, until, type TestServer } from "@quantix/testing";

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

/**
 * Two QEMU agents (TCG) in this process, linked to `s`, each with its own state directory
 * `<dir>/a` and `<dir>/b` (so its own pool root, as on two hosts), the image directories
 * `imageDirs` and the shared directories `sharedDirs` (VMCP_SHARED_DIRS) of both.
 */
export async function startQemuAgentPair(s: TestServer, dir: string, prefix: string, imageDirs: readonly string[], sharedDirs: readonly string[] = []): Promise<[TestAgent<QemuBackend>, TestAgent<QemuBackend>]> {
  const agent = (name: string) => new TestAgent(new QemuBackend({ stateDir: join(dir, name), kvm: false }), join(dir, name), `${prefix}-${name}-${process.pid}`, 200, imageDirs, sharedDirs);
  const pair: [TestAgent<QemuBackend>, TestAgent<QemuBackend>] = [agent("a"), agent("b")];
  for (const a of pair) await a.start(s.url);
  return pair;
}

/** Teardown of a test on such agents: deletes every VM through the API, ends whatever QEMU is left, stops the agents. */
export async function stopQemuAgents(s: TestServer | undefined, agents: readonly (TestAgent<QemuBackend> | undefined)[]): Promise<void> {
  for (const vm of (await s?.vms.listVMs({}).catch(() => ({ vms: [] })))?.vms ?? []) await s!.vms.deleteVM({ id: vm.id, force: true }).catch(() => undefined);
  for (const a of agents) for (const v of (await a?.backend.listVMs().catch(() => [])) ?? []) if (v.pid) process.kill(v.pid, "SIGKILL");
  for (const a of agents) await a?.kill().catch(() => undefined);
  for (const a of agents) await a?.backend.close().catch(() => undefined);
}
