import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { CreatePortRequestSchema, DeletePortRequestSchema, UpdatePortRequestSchema } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { CreateVirtualNetworkRequestSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { ProjectSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { allOf, DEFAULT_PROJECT_ID, NETWORK_ALLOCATION_KIND, PROJECT_KIND, portNameAllocationId, QuantixError, randomIds, systemClock } from "@quantix/core";
import { QuotaLedger } from "../quota/quota-ledger.js";
import { MemoryStore } from "../store/memory-store.js";
import { VirtualNetworkService } from "./network-service.js";
import { PortService } from "./port-service.js";
import { SecurityGroupService } from "./security-group-service.js";

// PortService's name claims on the memory store, called directly: calls started together
// interleave at every read (the store answers at once), so each of them reads the name
// free before any commits. Only the claim in the commit keeps the name to one port.

async function world() {
  const store = new MemoryStore();
  await store.of(PROJECT_KIND).create(create(ProjectSchema, { id: DEFAULT_PROJECT_ID, name: "default" }));
  const deps = { store, clock: systemClock, ids: randomIds };
  const groups = new SecurityGroupService(deps);
  const ensureDefaultGroup = (projectId: string) => groups.ensureDefault(projectId);
  const nets = new VirtualNetworkService({ ...deps, ledger: new QuotaLedger({ store, clock: systemClock, defaults: {} }), ensureDefaultGroup });
  const ports = new PortService({ ...deps, ensureDefaultGroup });
  const net = await nets.create(create(CreateVirtualNetworkRequestSchema, { name: "n", spec: { type: NetworkType.VXLAN, cidr: "10.40.0.0/24" } }));
  const createPort = (name: string) => ports.create(create(CreatePortRequestSchema, { name, spec: { networkId: net.id } }));
  const rename = (id: string, name: string) => ports.update(create(UpdatePortRequestSchema, { id, name, updateMask: { paths: ["name"] } }));
  const claims = async () => {
    const out: string[] = [];
    for await (const a of allOf(store.of(NETWORK_ALLOCATION_KIND), { where: { network_id: net.id } })) if (a.portName !== "") out.push(`${a.portName}=${a.portId}`);
    return out.sort();
  };
  return { store, net, ports, createPort, rename, claims };
}

/** The one fulfilled result of `settled`; every other refused ALREADY_EXISTS naming it. */
function oneWinner<T extends { id: string }>(settled: PromiseSettledResult<T>[], netId: string, name: string): T {
  const won = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  assert.equal(won.length, 1, `${won.length} won`);
  for (const r of settled) {
    if (r.status === "fulfilled") continue;
    assert.ok(r.reason instanceof QuantixError && r.reason.code === "already_exists", String(r.reason));
    assert.equal(r.reason.message, `a port named '${name}' already exists on virtual network '${netId}' (port '${won[0]!.id}')`);
  }
  return won[0]!;
}

describe("port names: one claim per name on a network", () => {
  it("of creates started together, one gets the name; unnamed ports claim nothing", async () => {
    const w = await world();
    const web = oneWinner(await Promise.allSettled(Array.from({ length: 8 }, () => w.createPort("web"))), w.net.id, "web");
    await Promise.all(Array.from({ length: 3 }, () => w.createPort("")));
    assert.deepEqual(await w.claims(), [`web=${web.id}`]);
  });

  it("of renames started together, one gets the name; the winner's old name is free, the losers keep theirs", async () => {
    const w = await world();
    const made = await Promise.all(["a", "b", "c", "d"].map((n) => w.createPort(n)));
    const won = oneWinner(await Promise.allSettled(made.map((p) => w.rename(p.id, "shared"))), w.net.id, "shared");
    const names = made.map((p) => (p.id === won.id ? "shared" : p.name));
    assert.deepEqual(await w.claims(), made.map((p, i) => `${names[i]}=${p.id}`).sort());
    // The old name of the winner is taken by a new port at once.
    const old = made.find((p) => p.id === won.id)!.name;
    assert.equal((await w.createPort(old)).name, old);
  });

  it("a create and a rename of one name started together: one gets it", async () => {
    const w = await world();
    const p = await w.createPort("");
    const settled = await Promise.allSettled<{ id: string }>([w.createPort("x"), w.rename(p.id, "x"), w.createPort("x")]);
    const won = oneWinner(settled, w.net.id, "x");
    assert.deepEqual(await w.claims(), [`x=${won.id}`]);
  });

  it("a rename racing another update of the same port still moves its claim (the update reads again)", async () => {
    const w = await world();
    const p = await w.createPort("first");
    await Promise.all([w.rename(p.id, "second"), w.ports.update(create(UpdatePortRequestSchema, { id: p.id, description: "d", updateMask: { paths: ["description"] } }))]);
    await w.rename(p.id, "third");
    assert.deepEqual(await w.claims(), [`third=${p.id}`]);
    assert.equal(await w.store.of(NETWORK_ALLOCATION_KIND).get(portNameAllocationId(w.net.id, "second")), undefined);
  });

  it("a port stored before names were claimed (no claim) still holds its name against creates and renames, and is renamed and deleted", async () => {
    const w = await world();
    const legacy = await w.createPort("old");
    await w.store.of(NETWORK_ALLOCATION_KIND).delete(portNameAllocationId(w.net.id, "old"));
    const refused = await w.createPort("old").then(() => undefined, (e: unknown) => e);
    assert.ok(refused instanceof QuantixError && refused.code === "already_exists" && refused.message.includes(legacy.id), String(refused));
    const other = await w.createPort("other");
    const renamed = await w.rename(other.id, "old").then(() => undefined, (e: unknown) => e);
    assert.ok(renamed instanceof QuantixError && renamed.code === "already_exists" && renamed.message.includes(legacy.id), String(renamed));
    await w.rename(legacy.id, "new");
    assert.deepEqual(await w.claims(), [`new=${legacy.id}`, `other=${other.id}`]);
    await w.ports.delete(create(DeletePortRequestSchema, { id: legacy.id }));
    assert.deepEqual(await w.claims(), [`other=${other.id}`]);
  });
});
