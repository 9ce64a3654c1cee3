/** Key cases of the policy, asserted by hand (the matrix derives its expectations from the table). */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { until } from "@quantix/testing";
import { BSON } from "bson";
import { MemoryGateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { PROTOCOLS, startWorld, type World } from "../testing/identity-world.js";

const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
const codeOf = (p: Promise<unknown>) => p.then(() => 0, (e: unknown) => ConnectError.from(e).code);
const errOf = (p: Promise<unknown>) => p.then(() => assert.fail("expected an error"), (e: unknown) => ConnectError.from(e));

describe("authorization, case by case", () => {
  let w: World;
  before(async () => {
    w = await startWorld();
  });
  after(() => w.close());

  test("a reader reads its project's VMs and cannot write them: PERMISSION_DENIED naming the role missing", async () => {
    for (const protocol of PROTOCOLS) {
      const get = await w.call(protocol, VMService.method.getVM, { id: w.vmA }, w.tokens.reader);
      assert.equal(get.code, 0, get.message);
      for (const [m, req] of [
        [VMService.method.startVM, { id: w.vmA }],
        [VMService.method.updateVM, { id: w.vmA, description: "x", updateMask: { paths: ["description"] } }],
        [VMService.method.deleteVM, { id: w.vmA }],
        [VMService.method.createVM, { name: "by-reader", projectId: w.projectA, spec: SPEC }],
      ] as const) {
        const out = await w.call(protocol, m, req, w.tokens.reader);
        assert.equal(out.code, Code.PermissionDenied, `${m.name} over ${protocol}: ${out.message}`);
        assert.match(decodeURIComponent(out.message), new RegExp(`requires role member in project ${w.projectA}`));
      }
    }
    const vm = await w.admin(VMService).getVM({ id: w.vmA });
    assert.equal(vm.description, "", "nothing changed");
  });

  test("a member of A cannot see B's VMs: NOT_FOUND by id, absent from lists, PERMISSION_DENIED for B's list", async () => {
    const member = w.as(VMService, w.tokens.member);
    const hidden = await errOf(member.getVM({ id: w.vmB }));
    assert.equal(hidden.code, Code.NotFound);
    // The same words as for a VM that does not exist: B's VM's existence is not told.
    assert.equal(hidden.rawMessage, `VM '${w.vmB}' not found`);
    assert.equal(await codeOf(member.startVM({ id: w.vmB })), Code.NotFound);
    const all = await member.listVMs({});
    assert.deepEqual(new Set(all.vms.map((v) => v.projectId)), new Set([w.projectA]));
    assert.ok(all.vms.some((v) => v.id === w.vmA));
    assert.equal(all.totalCount, all.vms.length);
    assert.equal(await codeOf(member.listVMs({ projectId: w.projectB })), Code.PermissionDenied);
    // The admin sees both.
    const everything = await w.admin(VMService).listVMs({ pageSize: 1000 });
    assert.ok(everything.vms.some((v) => v.id === w.vmB) && everything.vms.some((v) => v.id === w.vmA));
  });

  test("watches filter: a member of A sees A's VMs and their changes, never B's", async () => {
    for (const protocol of ["connect", "grpc"] as const) {
      const token = w.tokens.member!;
      const member =
        protocol === "connect"
          ? w.as(VMService, token)
          : createClient(VMService, createGrpcTransport({ baseUrl: w.url, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] }));
      const ac = new AbortController();
      const seen: { type: EventType; project: string; name: string }[] = [];
      const stream = (async () => {
        try {
          for await (const u of member.watchVMs({}, { signal: ac.signal })) {
            seen.push({ type: u.type, project: u.vm?.projectId ?? "", name: u.vm?.name ?? "" });
            if (u.vm?.name === `last-${protocol}`) return;
          }
        } catch (err) {
          if (!ac.signal.aborted) throw err;
        }
      })();
      await until(() => (seen.some((s) => s.type === EventType.SYNCED) ? true : undefined), "the watch's SYNCED");
      await w.admin(VMService).createVM({ name: `in-b-${protocol}`, projectId: w.projectB, spec: SPEC });
      await w.admin(VMService).createVM({ name: `last-${protocol}`, projectId: w.projectA, spec: SPEC });
      await stream;
      ac.abort();
      assert.ok(seen.every((s) => s.type === EventType.SYNCED || s.project === w.projectA), JSON.stringify(seen));
      assert.ok(seen.some((s) => s.name === `last-${protocol}`));
    }
  });

  test("an open watch ends with PERMISSION_DENIED when its caller's role changes (it was filtered by the old one)", async () => {
    const u = await w.admin(IdentityService).createUser({ username: "watcher", password: "a-long-test-password-1" });
    await w.admin(ProjectService).setRoleBinding({ projectId: w.projectA, principalType: 1, principalId: u.id, role: Role.READER });
    const token = (await w.as(IdentityService, undefined).login({ username: "watcher", password: "a-long-test-password-1" })).accessToken;
    let synced = false;
    let ended: ConnectError | undefined;
    void (async () => {
      try {
        for await (const m of w.as(VMService, token).watchVMs({})) if (m.type === EventType.SYNCED) synced = true;
      } catch (err) {
        ended = ConnectError.from(err);
      }
    })();
    await until(() => (synced ? true : undefined), "the watch to be live");
    await w.admin(ProjectService).deleteRoleBinding({ projectId: w.projectA, principalType: 1, principalId: u.id });
    await until(() => ended, "the watch to end");
    assert.equal(ended!.code, Code.PermissionDenied);
    assert.match(ended!.rawMessage, /role in project .* changed/);
    assert.deepEqual((await w.as(VMService, token).listVMs({})).vms, [], "and its lists are empty now");
  });

  test("nodes are readable by any authenticated caller and changed by system admins only", async () => {
    const reader = w.as(NodeService, w.tokens.reader);
    assert.ok((await reader.listNodes({})).nodes.length >= 3);
    const e = await errOf(reader.disableNode({ id: "00000000-0000-0000-0001-000000000001" }));
    assert.equal(e.code, Code.PermissionDenied);
    assert.equal(e.rawMessage, "requires system admin");
    assert.equal(await codeOf(w.as(NodeService, w.tokens["project-admin"]).registerNode({ hostname: "h" })), Code.PermissionDenied);
  });

  test("CreateVM needs an existing project, and the member role there", async () => {
    const e = await errOf(w.admin(VMService).createVM({ name: "nowhere", projectId: "no-such-project", spec: SPEC }));
    assert.equal(e.code, Code.NotFound);
    assert.equal(e.rawMessage, "project 'no-such-project' not found");
    const member = w.as(VMService, w.tokens.member);
    assert.equal((await member.createVM({ name: "mine", projectId: w.projectA, spec: SPEC })).projectId, w.projectA);
    assert.equal(await codeOf(member.createVM({ name: "theirs", projectId: w.projectB, spec: SPEC })), Code.PermissionDenied);
    // Without project_id, the default project: the member has no role there.
    assert.equal(await codeOf(member.createVM({ name: "default", spec: SPEC })), Code.PermissionDenied);
  });

  test("projects: a member lists its own; a stranger gets NOT_FOUND; only a project admin manages bindings", async () => {
    const lists = await w.as(ProjectService, w.tokens.member).listProjects({});
    assert.deepEqual(lists.projects.map((p) => p.id), [w.projectA]);
    assert.equal(await codeOf(w.as(ProjectService, w.tokens.member).getProject({ id: w.projectB })), Code.NotFound);
    const sa = await w.admin(IdentityService).createServiceAccount({ name: "bindings-sa" });
    const bind = { projectId: w.projectA, principalType: 2, principalId: sa.id, role: Role.READER };
    assert.equal(await codeOf(w.as(ProjectService, w.tokens.member).setRoleBinding(bind)), Code.PermissionDenied);
    assert.equal((await w.as(ProjectService, w.tokens["project-admin"]).setRoleBinding(bind)).role, Role.READER);
    const listed = await w.as(ProjectService, w.tokens.reader).listRoleBindings({ projectId: w.projectA });
    assert.ok(listed.roleBindings.some((b) => b.principalId === sa.id));
    assert.equal(await codeOf(w.as(ProjectService, w.tokens.reader).listRoleBindings({ projectId: w.projectB })), Code.PermissionDenied);
    // Without a project, a caller's list shows its projects' bindings only.
    const mine = await w.as(ProjectService, w.tokens["member-of-other"]).listRoleBindings({});
    assert.ok(mine.roleBindings.length > 0 && mine.roleBindings.every((b) => b.projectId === w.projectB));
  });

  test("DeleteProject is refused while the project holds VMs", async () => {
    const projects = w.admin(ProjectService);
    const p = await projects.createProject({ name: "holds-vms" });
    const vm = await w.admin(VMService).createVM({ name: "held", projectId: p.id, spec: SPEC });
    const e = await errOf(projects.deleteProject({ id: p.id }));
    assert.equal(e.code, Code.FailedPrecondition);
    assert.equal(e.rawMessage, `project '${p.id}' still holds 1 VM: delete them first`);
    await w.admin(VMService).deleteVM({ id: vm.id });
    await projects.deleteProject({ id: p.id });
    assert.equal(await codeOf(projects.getProject({ id: p.id })), Code.NotFound);
  });

  test("a token's role is capped by its owner's: a reader cannot make a member token", async () => {
    const ids = w.as(IdentityService, w.tokens.reader);
    const e = await errOf(ids.createToken({ name: "too-much", projectId: w.projectA, role: Role.MEMBER }));
    assert.equal(e.code, Code.PermissionDenied);
    const { secret } = await ids.createToken({ name: "reader-token", projectId: w.projectA, role: Role.READER });
    assert.equal(await codeOf(w.as(VMService, secret).startVM({ id: w.vmA })), Code.PermissionDenied);
    assert.equal((await w.as(VMService, secret).getVM({ id: w.vmA })).id, w.vmA);
    // A member's token limited to reader cannot write either.
    const limited = (await w.as(IdentityService, w.tokens.member).createToken({ name: "member-as-reader", projectId: w.projectA, role: Role.READER })).secret;
    assert.equal(await codeOf(w.as(VMService, limited).updateVM({ id: w.vmA, description: "no", updateMask: { paths: ["description"] } })), Code.PermissionDenied);
    // An API token cannot make tokens.
    assert.equal(await codeOf(w.as(IdentityService, limited).createToken({ name: "child", projectId: w.projectA, role: Role.READER })), Code.PermissionDenied);
  });

  test("a token limited to the scope dom.read calls only what needs it (and WhoAmI)", async () => {
    const { secret } = await w.as(IdentityService, w.tokens.member).createToken({ name: "dom-reader", projectId: w.projectA, role: Role.READER, scopes: ["dom.read"] });
    const who = await w.as(IdentityService, secret).whoAmI({});
    assert.deepEqual(who.scopes, ["dom.read"]);
    const e = await errOf(w.as(VMService, secret).getVM({ id: w.vmA }));
    assert.equal(e.code, Code.PermissionDenied);
    assert.match(e.rawMessage, /limited to the scopes dom\.read/);
  });

  test("the MemoryGateway: dom.read reads, dom.write writes, a reader's role never writes", async () => {
    const writeDiff = { nodeId: new TextEncoder().encode("scoped/doc"), diffBson: BSON.serialize({ $set: { a: 1 } }), vectorClock: { entries: { w: 1n } } };
    const { secret: reader } = await w.as(IdentityService, w.tokens.member).createToken({ name: "dom-read-only", projectId: w.projectA, role: Role.MEMBER, scopes: ["dom.read"] });
    const { secret: writer } = await w.as(IdentityService, w.tokens.member).createToken({ name: "dom-writer", projectId: w.projectA, role: Role.MEMBER, scopes: ["dom.read", "dom.write"] });
    const denied = await errOf(w.as(MemoryGateway, reader).writeDiff(writeDiff));
    assert.equal(denied.code, Code.PermissionDenied);
    assert.match(denied.rawMessage, /dom\.write/);
    const written = await w.as(MemoryGateway, writer).writeDiff(writeDiff);
    assert.equal(written.success, true);
    assert.equal((await w.as(MemoryGateway, reader).readSnapshot({ nodeId: writeDiff.nodeId })).version, written.newVersion);
    // The project role still counts: a reader (no token scopes) reads and may not write.
    assert.equal((await errOf(w.as(MemoryGateway, w.tokens.reader).writeDiff({ ...writeDiff, vectorClock: { entries: { w: 2n } } }))).code, Code.PermissionDenied);
    assert.equal((await w.as(MemoryGateway, w.tokens.reader).listNodes({})).totalCount >= 1, true);
    // No token at all: unauthenticated.
    assert.equal((await errOf(w.as(MemoryGateway, undefined).listNodes({}))).code, Code.Unauthenticated);
  });
});

