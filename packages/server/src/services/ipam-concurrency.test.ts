import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { rejection, startPostgres, startTestServer, type TestPostgres, type TestServer } from "@quantix/testing";

// IPAM under concurrency on the durable stores: CreatePort from several callers at once,
// through one control plane (embedded) and through two replicas sharing one PostgreSQL,
// never gives one address to two ports, fills the DHCP range exactly, and refuses the rest
// with RESOURCE_EXHAUSTED naming the subnet. A requested address is refused to the second
// caller; a released one is handed out again. A port name is given to one of many
// concurrent creates or renames, and freed by a delete or a rename.

/** A /26: hosts .1-.62, the gateway .1, the DHCP range .2-.62: 61 addresses. */
const CIDR = "10.77.0.0/26";
const POOL = 61;
const CALLERS = 80;
/** Callers racing for one port name. */
const NAMERS = 20;

function ipamUnderConcurrency(name: string, open: () => Promise<TestServer[]>): void {
  describe(`IPAM under concurrency (${name})`, () => {
    let servers: TestServer[];
    before(async () => {
      servers = await open();
    });
    after(async () => {
      for (const s of servers ?? []) await s.close();
    });

    it(`${CALLERS} concurrent CreatePort on a ${CIDR} through every replica: every port a distinct address, exactly the range's ${POOL} succeed`, async () => {
      const nets = createClient(VirtualNetworkService, servers[0]!.transport);
      const net = await nets.createVirtualNetwork({ name: "race", spec: { type: NetworkType.VXLAN, cidr: CIDR } });
      const clients = servers.map((s) => createClient(PortService, s.transport));
      const settled = await Promise.allSettled(Array.from({ length: CALLERS }, (_, i) => clients[i % clients.length]!.createPort({ name: `p${i}`, spec: { networkId: net.id } })));
      const made = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      const refused = settled.flatMap((r) => (r.status === "rejected" ? [ConnectError.from(r.reason)] : []));
      const addresses = made.map((p) => p.spec!.fixedIps[0]!);
      assert.equal(made.length, POOL, `${made.length} made; refusals: ${[...new Set(refused.map((e) => e.message))].join(" | ")}`);
      assert.equal(new Set(addresses).size, POOL, "no address given twice");
      assert.equal(new Set(made.map((p) => p.spec!.macAddress)).size, POOL, "no MAC given twice");
      for (const e of refused) {
        assert.equal(e.code, Code.ResourceExhausted, e.message);
        assert.match(e.message, /subnet 10\.77\.0\.0\/26/);
      }
      // The store agrees, read through the other replica.
      const other = createClient(PortService, servers[servers.length - 1]!.transport);
      const listed = await other.listPorts({ networkId: net.id, pageSize: 1000 });
      assert.equal(listed.totalCount, POOL);
      assert.deepEqual(listed.ports.map((p) => p.spec!.fixedIps[0]).sort(), [...addresses].sort());
      const n = await createClient(VirtualNetworkService, servers[servers.length - 1]!.transport).getVirtualNetwork({ id: net.id });
      assert.deepEqual([n.status!.portCount, n.status!.allocatedIpCount, n.status!.availableIpCount], [POOL, POOL + 1, 0]);

      // Release and reuse; a requested address claimed by two callers at once goes to one.
      const freed = made.slice(0, 2);
      await Promise.all(freed.map((p, i) => clients[i % clients.length]!.deletePort({ id: p.id })));
      const want = freed[0]!.spec!.fixedIps[0]!;
      const pair = await Promise.allSettled(clients.concat(clients).slice(0, 2).map((c, i) => c.createPort({ name: `fixed${i}`, spec: { networkId: net.id, fixedIps: [want] } })));
      const winners = pair.filter((r) => r.status === "fulfilled");
      assert.equal(winners.length, 1);
      const loser = ConnectError.from((pair.find((r) => r.status === "rejected") as PromiseRejectedResult).reason);
      assert.equal(loser.code, Code.AlreadyExists, loser.message);
      assert.match(loser.message, new RegExp(want.replace(/\./g, "\\.")));
      const reused = await clients[0]!.createPort({ spec: { networkId: net.id } });
      assert.equal(reused.spec!.fixedIps[0], freed[1]!.spec!.fixedIps[0]);
      assert.equal((await rejection(clients[0]!.createPort({ spec: { networkId: net.id } }))).code, Code.ResourceExhausted);
    });

    it(`${NAMERS} concurrent CreatePort of one name, and as many renames to one name, through every replica: exactly one wins, the others ALREADY_EXISTS naming it`, async () => {
      const net = await createClient(VirtualNetworkService, servers[0]!.transport).createVirtualNetwork({ name: "names", spec: { type: NetworkType.VXLAN, cidr: "10.78.0.0/24" } });
      const clients = servers.map((s) => createClient(PortService, s.transport));
      const named = (name: string) => async () => (await clients[0]!.listPorts({ networkId: net.id, pageSize: 1000 })).ports.filter((p) => p.name === name);
      const oneWinner = async (settled: PromiseSettledResult<{ id: string }>[], name: string) => {
        const won = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
        const refused = settled.flatMap((r) => (r.status === "rejected" ? [ConnectError.from(r.reason)] : []));
        assert.equal(won.length, 1, `${won.length} won; refusals: ${[...new Set(refused.map((e) => e.message))].join(" | ")}`);
        for (const e of refused) {
          assert.equal(e.code, Code.AlreadyExists, e.message);
          assert.equal(e.rawMessage, `a port named '${name}' already exists on virtual network '${net.id}' (port '${won[0]!.id}')`);
        }
        assert.deepEqual((await named(name)()).map((p) => p.id), [won[0]!.id], "one port has the name");
        return won[0]!;
      };

      const created = await oneWinner(await Promise.allSettled(Array.from({ length: NAMERS }, (_, i) => clients[i % clients.length]!.createPort({ name: "same", spec: { networkId: net.id } }))), "same");
      // Unnamed ports claim nothing: any number of them share the network.
      const unnamed = await Promise.all(Array.from({ length: NAMERS }, (_, i) => clients[i % clients.length]!.createPort({ spec: { networkId: net.id } })));
      const renamed = await oneWinner(
        await Promise.allSettled(unnamed.map((p, i) => clients[i % clients.length]!.updatePort({ id: p.id, name: "moved", updateMask: { paths: ["name"] } }))),
        "moved",
      );
      // The name goes with a delete, and with a rename away from it.
      await clients[0]!.deletePort({ id: created.id });
      await clients[clients.length - 1]!.updatePort({ id: renamed.id, name: "away", updateMask: { paths: ["name"] } });
      const again = await oneWinner(await Promise.allSettled(Array.from({ length: 4 }, (_, i) => clients[i % clients.length]!.createPort({ name: "same", spec: { networkId: net.id } }))), "same");
      await oneWinner(await Promise.allSettled(unnamed.filter((p) => p.id !== renamed.id).slice(0, 4).map((p, i) => clients[i % clients.length]!.updatePort({ id: p.id, name: "moved", updateMask: { paths: ["name"] } }))), "moved");
      assert.equal((await rejection(clients[0]!.createPort({ name: "away", spec: { networkId: net.id } }))).code, Code.AlreadyExists);
      assert.notEqual(again.id, created.id);
      // The claims never count as addresses.
      const n = await createClient(VirtualNetworkService, servers[servers.length - 1]!.transport).getVirtualNetwork({ id: net.id });
      assert.deepEqual([n.status!.portCount, n.status!.allocatedIpCount], [NAMERS + 1, NAMERS + 2]);
    });
  });
}

let pg: TestPostgres | undefined;
let dir: string | undefined;
after(async () => {
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

ipamUnderConcurrency("embedded", async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-ipam-"));
  return [await startTestServer({ store: { kind: "embedded", dataDir: dir }, demo: false })];
});

ipamUnderConcurrency("PostgreSQL, two control-plane replicas", async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase("ipam_two_replicas");
  const out: TestServer[] = [];
  for (let i = 0; i < 2; i++) out.push(await startTestServer({ store: { kind: "postgres", url }, demo: false }));
  return out;
});
