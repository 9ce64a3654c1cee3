import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { runNode, startTestServer, until, within } from "@quantix/testing";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

// A node has one agent: a second agent with the same node name (the default is the host
// name, so two agents on one host share it) must not take over the first one's node.
test("a second agent registering a live node's name exits 1 saying so; the node stays the first agent's", async () => {
  const cp = await startTestServer({ demo: false });
  const dirs = [await mkdtemp(join(tmpdir(), "quantix-one-agent-a-")), await mkdtemp(join(tmpdir(), "quantix-one-agent-b-"))];
  const name = `one-agent-${process.pid}`;
  const env = (stateDir: string) => ({ VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_ADDRESS: "127.0.0.1", VMCP_STATE_DIR: stateDir, QUANTIX_CONTROL_PLANE: cp.url, QUANTIX_NODE_NAME: name });
  const first = runNode(["--import", "tsx", MAIN], env(dirs[0]!));
  let second: ReturnType<typeof runNode> | undefined;
  try {
    const firstUrl = await until(() => /"url":"(http:[^"]+)"/.exec(first.out())?.[1], "the first agent's listening line", 30_000);
    const node = await until(async () => (await cp.nodes.listNodes({})).nodes.find((n) => n.hostname === name && n.status?.phase === Phase.READY), "the first agent's node READY", 30_000);
    assert.equal(node.spec?.agentEndpoint, firstUrl);

    second = runNode(["--import", "tsx", MAIN], env(dirs[1]!));
    assert.equal(await within(second.exited, 30_000, "the second agent exiting"), 1);
    assert.match(second.err(), new RegExp(`node '${name}' \\(${node.id}\\) already has a live agent at ${firstUrl}`));
    assert.match(second.err(), /QUANTIX_NODE_NAME or --node-name/);

    const after = await cp.nodes.getNode({ id: node.id });
    assert.equal(after.spec?.agentEndpoint, firstUrl, "the node still points at the first agent");
    assert.equal((await cp.nodes.listNodes({})).nodes.filter((n) => n.hostname === name).length, 1);
  } finally {
    for (const p of [first, second]) p?.child.kill("SIGKILL");
    await cp.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});
