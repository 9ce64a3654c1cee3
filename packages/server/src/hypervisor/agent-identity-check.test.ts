import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSchema, NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NODE_KIND } from "@quantix/core";
import { silentLogger } from "@quantix/rpc";
import { FakeClock, until } from "@quantix/testing";
import { MemoryStore } from "../store/memory-store.js";
import { AGENT_IDENTITY_CONDITION } from "./agent-identity-check.js";
import { attachAgentNodes } from "./agent-nodes.js";
import type { AgentProbe } from "./agent-tls.js";
import { NodeDrivers } from "./node-drivers.js";

// With agents enrolled only, a node is attached once its endpoint proved it is the node's
// agent, and checked again later: when something else answers there, the node is detached
// and its AgentIdentity condition says why; a plain http endpoint is never attached.

const DIAL = { ca: "ca", cert: "cert", key: "key" };

test("an attached agent whose endpoint later answers with another certificate is detached, its status saying why", async () => {
  const clock = new FakeClock(Date.now());
  const store = new MemoryStore();
  const drivers = new NodeDrivers();
  let answer: AgentProbe = { kind: "verified" };
  const agents = attachAgentNodes({ store, drivers, log: silentLogger, clock, enrolledOnly: { dial: DIAL, probe: async () => answer } });
  try {
    const node = await store.of(NODE_KIND).create(create(NodeSchema, { id: "n-1", hostname: "h-1", spec: { agentEndpoint: "https://127.0.0.1:1", schedulable: true }, status: { phase: Phase.READY } }));
    await until(() => (drivers.has(node.id) ? true : undefined), "the verified agent attached");
    const beat = () => store.of(NODE_KIND).update(node.id, (n) => ({ ...n, labels: { beat: String(clock.now()) } }));
    answer = { kind: "wrong-identity", message: "the certificate presented there is not node n-1's" };
    await clock.advance(61_000);
    await beat();
    const cond = await until(async () => (await store.of(NODE_KIND).get(node.id))?.status?.conditions.find((c) => c.type === AGENT_IDENTITY_CONDITION && c.reason === "AgentIdentityMismatch"), "the AgentIdentity condition");
    assert.match(cond.message, /not node n-1's/);
    assert.equal(drivers.has(node.id), false);
    // The real agent back: attached again, the condition true.
    answer = { kind: "verified" };
    await beat();
    await until(() => (drivers.has(node.id) ? true : undefined), "attached again");
    const back = (await store.of(NODE_KIND).get(node.id))?.status?.conditions.find((c) => c.type === AGENT_IDENTITY_CONDITION);
    assert.equal(back?.reason, "AgentCertificateVerified");

    const plain = await store.of(NODE_KIND).create(create(NodeSchema, { id: "n-2", hostname: "h-2", spec: { agentEndpoint: "http://127.0.0.1:1", schedulable: true } }));
    const refused = await until(async () => (await store.of(NODE_KIND).get(plain.id))?.status?.conditions.find((c) => c.type === AGENT_IDENTITY_CONDITION), "the plain endpoint's condition");
    assert.equal(refused.reason, "AgentNotEnrolled");
    assert.equal(drivers.has(plain.id), false);
  } finally {
    await agents.stop();
  }
});
