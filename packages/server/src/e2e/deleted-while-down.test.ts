import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { VM_KIND, type Store } from "@quantix/core";
import { startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";
import { openStore } from "../store/open-store.js";

// A guest is removed by observing its node, whatever events were missed: its VM deleted
// while no control plane ran (marked for deletion, or its record gone altogether) is
// cleaned up once the control plane is back; a guest the cluster did not create is not.

let dir: string;
let agent: TestAgent<SimulatedBackend>;
let cp: TestServer | undefined;
let port = 0;

const start = async (): Promise<TestServer> => {
  const s = await startTestServer({ demo: false, port, store: { kind: "embedded", dataDir: join(dir, "data") } });
  port = s.cp.port;
  return s;
};

/** Opens the control plane's store while the control plane is down, as another tool would. */
async function whileDown(fn: (store: Store) => Promise<void>): Promise<void> {
  const store = await openStore({ kind: "embedded", dataDir: join(dir, "data") }, { historyRevisions: 1000, pgMaxConnections: 1 }, silentLogger);
  try {
    await fn(store);
  } finally {
    await store.close();
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-deleted-down-"));
  cp = await start();
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 0 }), join(dir, "agent"), `down-agent-${process.pid}`);
  await agent.start(cp.url);
  // A file in the agent's image directory (its allow-list refuses any other path).
  spec.boot.directBoot.kernelPath = await agent.image("vmlinuz");
});

after(async () => {
  await agent?.kill().catch(() => undefined);
  await cp?.close();
  await agent?.backend.close();
  await rm(dir, { recursive: true, force: true });
});

const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: "", cmdline: "console=ttyS0" } } };
const onNode = (id: string) => agent.backend.getVMInfo(id).then((i) => i.state as string, () => "absent");

test("a guest whose VM was deleted while its control plane was down is removed after it restarts", async () => {
  const nodeId = await until(async () => (await cp!.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY");
  const marked = await cp!.vms.createVM({ name: "marked-while-down", spec, nodeId, startOnCreate: true });
  const purged = await cp!.vms.createVM({ name: "purged-while-down", spec, nodeId, startOnCreate: true });
  for (const vm of [marked, purged]) await until(async () => ((await cp!.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), `${vm.name} RUNNING`);
  // A guest on the same host that this cluster did not create.
  const agentApi = createClient(VmService, createGrpcTransport({ baseUrl: agent.server.url }));
  await agentApi.createVm({ vmId: "made-by-hand", config: { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 256n << 20n }, boot: { kernelPath: spec.boot.directBoot.kernelPath } } });
  await agentApi.bootVm({ vmId: "made-by-hand" });

  await cp!.close();
  cp = undefined;
  await whileDown(async (store) => {
    // DeleteVM's mark, with nobody running the VM controller.
    await store.of(VM_KIND).delete(marked.id);
    // A record removed altogether (its finalizer taken off by hand).
    await store.of(VM_KIND).delete(purged.id);
    await store.of(VM_KIND).update(purged.id, (vm) => ((vm.finalizers = []), vm));
    assert.equal(await store.of(VM_KIND).get(purged.id), undefined);
  });
  assert.equal(await onNode(marked.id), "running", "nothing happened while the control plane was down");
  assert.equal(await onNode(purged.id), "running");

  cp = await start();
  await until(async () => ((await onNode(marked.id)) === "absent" ? true : undefined), "the marked VM's guest removed", 15_000);
  await until(async () => ((await cp!.vms.getVM({ id: marked.id }).then(() => "there", () => "gone")) === "gone" ? true : undefined), "the marked VM deleted");
  await until(async () => ((await onNode(purged.id)) === "absent" ? true : undefined), "the orphaned guest removed", 15_000);
  assert.equal(await onNode("made-by-hand"), "running", "a guest the cluster did not create is left alone");
});
