import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { rejection, startPostgres, type TestPostgres } from "@quantix/testing";
import type { ControlPlaneConfig } from "../config.js";
import { startWorld, type World } from "../testing/identity-world.js";

// ListSecurityGroups' port_id on every store engine, through the real API with tokens:
// the groups the port uses (paged like any list), none for a port without port security,
// and a port the caller's list does not cover (another project's, or none at all) refused
// NOT_FOUND in GetPort's own words, so its existence is not told.

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

function groupsByPort(name: string, store: () => Promise<Partial<ControlPlaneConfig>>): void {
  describe(`ListSecurityGroups by port_id (${name})`, () => {
    let w: World;
    let ids: { web: string; db: string; two: string; open: string; other: string; otherDefault: string };

    before(async () => {
      w = await startWorld(await store());
      const nets = w.admin(VirtualNetworkService);
      const ports = w.admin(PortService);
      const groups = w.admin(SecurityGroupService);
      const netA = await nets.createVirtualNetwork({ name: "a", projectId: w.projectA, spec: { type: NetworkType.VXLAN, cidr: "10.61.0.0/24" } });
      const netB = await nets.createVirtualNetwork({ name: "b", projectId: w.projectB, spec: { type: NetworkType.VXLAN, cidr: "10.62.0.0/24" } });
      const web = await groups.createSecurityGroup({ name: "web", projectId: w.projectA, labels: { tier: "front" } });
      const db = await groups.createSecurityGroup({ name: "db", projectId: w.projectA });
      await groups.createSecurityGroup({ name: "unused", projectId: w.projectA });
      const two = await ports.createPort({ projectId: w.projectA, spec: { networkId: netA.id, securityGroupIds: [web.id, db.id] } });
      const open = await ports.createPort({ projectId: w.projectA, spec: { networkId: netA.id, portSecurityDisabled: true } });
      const other = await ports.createPort({ projectId: w.projectB, spec: { networkId: netB.id } });
      assert.deepEqual(open.spec!.securityGroupIds, []);
      assert.equal(other.spec!.securityGroupIds.length, 1, "B's default group");
      ids = { web: web.id, db: db.id, two: two.id, open: open.id, other: other.id, otherDefault: other.spec!.securityGroupIds[0]! };
    });
    after(async () => w?.close());

    it("lists exactly the port's groups, paged with tokens and counted, joined with the other filters", async () => {
      const member = w.as(SecurityGroupService, w.tokens.member);
      const all = await member.listSecurityGroups({ portId: ids.two });
      assert.deepEqual(all.securityGroups.map((g) => g.id), [ids.db, ids.web], "ordered by name");
      assert.equal(all.totalCount, 2);
      const first = await member.listSecurityGroups({ portId: ids.two, pageSize: 1 });
      assert.deepEqual([first.securityGroups.map((g) => g.id), first.totalCount], [[ids.db], 2]);
      assert.notEqual(first.nextPageToken, "");
      const second = await member.listSecurityGroups({ portId: ids.two, pageSize: 1, pageToken: first.nextPageToken });
      assert.deepEqual([second.securityGroups.map((g) => g.id), second.totalCount, second.nextPageToken], [[ids.web], 2, ""]);
      // The token is bound to the port asked: another port's list does not take it.
      const mismatch = await rejection(member.listSecurityGroups({ portId: ids.open, pageSize: 1, pageToken: first.nextPageToken }));
      assert.deepEqual([mismatch.code, fields(mismatch)], [Code.InvalidArgument, ["page_token"]]);
      assert.deepEqual((await member.listSecurityGroups({ portId: ids.two, labels: { tier: "front" } })).securityGroups.map((g) => g.id), [ids.web]);
      assert.deepEqual((await member.listSecurityGroups({ portId: ids.two, projectId: w.projectA })).securityGroups.map((g) => g.id), [ids.db, ids.web]);
    });

    it("a port without port security uses no group: an empty list", async () => {
      const page = await w.as(SecurityGroupService, w.tokens.member).listSecurityGroups({ portId: ids.open });
      assert.deepEqual([page.securityGroups.length, page.totalCount, page.nextPageToken], [0, 0, ""]);
    });

    it("another project's port and a missing port are NOT_FOUND in GetPort's words; a malformed id is INVALID_ARGUMENT naming port_id", async () => {
      const member = w.as(SecurityGroupService, w.tokens.member);
      const missing = randomUUID();
      for (const id of [ids.other, missing]) {
        const listed = await rejection(member.listSecurityGroups({ portId: id }));
        const got = await rejection(w.as(PortService, w.tokens.member).getPort({ id }));
        assert.equal(listed.code, Code.NotFound, listed.message);
        assert.equal(listed.rawMessage, `port '${id}' not found`);
        assert.deepEqual([got.code, got.rawMessage], [listed.code, listed.rawMessage]);
      }
      const bad = await rejection(member.listSecurityGroups({ portId: "no such port" }));
      assert.deepEqual([bad.code, fields(bad)], [Code.InvalidArgument, ["port_id"]]);
      // The admin sees every project's ports, but not outside the project it lists.
      const admin = w.admin(SecurityGroupService);
      assert.deepEqual((await admin.listSecurityGroups({ portId: ids.other })).securityGroups.map((g) => g.id), [ids.otherDefault]);
      const outside = await rejection(admin.listSecurityGroups({ portId: ids.other, projectId: w.projectA }));
      assert.deepEqual([outside.code, outside.rawMessage], [Code.NotFound, `port '${ids.other}' not found`]);
      // B's member sees its own port's groups.
      assert.deepEqual((await w.as(SecurityGroupService, w.tokens["member-of-other"]).listSecurityGroups({ portId: ids.other })).securityGroups.map((g) => g.id), [ids.otherDefault]);
    });

    it("follows the port: a group taken off it leaves the list", async () => {
      await w.admin(PortService).updatePort({ id: ids.two, spec: { securityGroupIds: [ids.web] }, updateMask: { paths: ["spec.security_group_ids"] } });
      const page = await w.as(SecurityGroupService, w.tokens.member).listSecurityGroups({ portId: ids.two });
      assert.deepEqual(page.securityGroups.map((g) => g.id), [ids.web]);
    });
  });
}

let pg: TestPostgres | undefined;
let dir: string | undefined;
after(async () => {
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

groupsByPort("memory", async () => ({}));
groupsByPort("embedded", async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-sg-by-port-"));
  return { store: { kind: "embedded", dataDir: dir } };
});
groupsByPort("PostgreSQL", async () => {
  pg = await startPostgres();
  return { store: { kind: "postgres", url: await pg.createDatabase("sg_by_port") } };
});
