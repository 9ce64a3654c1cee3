import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { PrincipalType, Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { createSimulatedHost } from "@quantix/agent";
import { DEFAULT_PROJECT_ID, PROJECT_KIND, USER_KIND } from "@quantix/core";
import { decodeProtectedHeader } from "jose";
import { startControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { MemoryStore } from "../store/memory-store.js";
import { startWorld, USER_PASSWORD, type World } from "../testing/identity-world.js";
import { FakeClock, until } from "@quantix/testing";
import { LoginLimiter } from "./login-limiter.js";

const codeOf = (p: Promise<unknown>) => p.then(() => 0, (e: unknown) => ConnectError.from(e).code);

describe("IdentityService", () => {
  let w: World;
  before(async () => {
    w = await startWorld();
  });
  after(() => w.close());

  test("WhoAmI tells the caller its roles", async () => {
    const me = await w.as(IdentityService, w.tokens.member).whoAmI({});
    assert.equal(me.principalKind, "user");
    assert.equal(me.id, w.userIds["member"]);
    assert.deepEqual(me.projects.map((p) => [p.projectId, p.role]), [[w.projectA, Role.MEMBER]]);
    assert.equal((await w.admin(IdentityService).whoAmI({})).systemAdmin, true);
  });

  test("a token: made for one project and role, shown once, listed without its secret, revoked", async () => {
    const member = w.as(IdentityService, w.tokens.member);
    const made = await member.createToken({ name: "ci", projectId: w.projectA, role: Role.MEMBER, ttlSec: 3600n });
    assert.match(made.secret, /^qtx_[0-9a-f-]{36}_[A-Za-z0-9_-]{43}$/);
    const vm = await w.as(VMService, made.secret).createVM({ name: "by-token", projectId: w.projectA, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
    assert.equal(vm.projectId, w.projectA);
    const listed = await member.listTokens({});
    assert.ok(listed.tokens.some((t) => t.id === made.token!.id && t.name === "ci" && t.role === Role.MEMBER));
    // Someone else's tokens are not listed to a member.
    assert.equal(await codeOf(member.listTokens({ ownerId: w.userIds["reader"]! })), Code.PermissionDenied);
    assert.equal(await codeOf(w.as(IdentityService, w.tokens.reader).revokeToken({ id: made.token!.id })), Code.NotFound);
    const revoked = await member.revokeToken({ id: made.token!.id });
    assert.ok(revoked.revokedAt);
    assert.equal(await codeOf(w.as(VMService, made.secret).getVM({ id: vm.id })), Code.Unauthenticated);
  });

  test("service accounts hold tokens a system admin makes; their roles come from bindings", async () => {
    const admin = w.admin(IdentityService);
    const sa = await admin.createServiceAccount({ name: "deployer" });
    await w.admin(ProjectService).setRoleBinding({ projectId: w.projectB, principalType: PrincipalType.SERVICE_ACCOUNT, principalId: sa.id, role: Role.MEMBER });
    const { secret } = await admin.createToken({ name: "deploy", serviceAccountId: sa.id, projectId: w.projectB, role: Role.MEMBER });
    const me = await w.as(IdentityService, secret).whoAmI({});
    assert.deepEqual([me.principalKind, me.name], ["service-account", "deployer"]);
    assert.equal((await w.as(VMService, secret).getVM({ id: w.vmB })).id, w.vmB);
    assert.equal(await codeOf(w.as(VMService, secret).getVM({ id: w.vmA })), Code.NotFound);
    assert.equal(await codeOf(w.as(IdentityService, w.tokens["project-admin"]).createToken({ name: "x", serviceAccountId: sa.id, projectId: w.projectB, role: Role.READER })), Code.PermissionDenied);
    // Taking the binding away takes the token's role away at once.
    await w.admin(ProjectService).deleteRoleBinding({ projectId: w.projectB, principalType: PrincipalType.SERVICE_ACCOUNT, principalId: sa.id });
    assert.equal(await codeOf(w.as(VMService, secret).getVM({ id: w.vmB })), Code.NotFound);
    await admin.deleteServiceAccount({ id: sa.id });
    assert.equal(await codeOf(w.as(IdentityService, secret).whoAmI({})), Code.Unauthenticated);
  });

  test("SetPassword: one's own needs the current password and ends older sessions; an admin resets anyone's", async () => {
    const username = `pw-${Date.now()}`;
    const u = await w.admin(IdentityService).createUser({ username, password: USER_PASSWORD });
    const login = (password: string) => w.as(IdentityService, undefined).login({ username, password });
    const session = (await login(USER_PASSWORD)).accessToken;
    const mine = w.as(IdentityService, session);
    assert.equal(await codeOf(mine.setPassword({ oldPassword: "not-the-old-one", newPassword: "a-brand-new-password" })), Code.Unauthenticated);
    assert.equal(await codeOf(mine.setPassword({ oldPassword: USER_PASSWORD, newPassword: "short" })), Code.InvalidArgument);
    assert.equal(await codeOf(mine.setPassword({ userId: w.userIds["member"]!, newPassword: "a-brand-new-password" })), Code.PermissionDenied);
    // JWT times are whole seconds: the change must fall in a later second than the session's issue.
    const issued = Number(JSON.parse(Buffer.from(session.split(".")[1]!, "base64url").toString()).iat);
    await until(() => (Math.floor(Date.now() / 1000) > issued ? true : undefined), "the next second");
    await mine.setPassword({ oldPassword: USER_PASSWORD, newPassword: "a-brand-new-password" });
    assert.equal(await codeOf(mine.whoAmI({})), Code.Unauthenticated, "the old session ended");
    assert.equal(await codeOf(login(USER_PASSWORD)), Code.Unauthenticated);
    await w.admin(IdentityService).setPassword({ userId: u.id, newPassword: "reset-by-the-admin" });
    assert.ok((await login("reset-by-the-admin")).accessToken);
  });

  test("users: only system admins create, list and delete them; a deleted user's sessions end", async () => {
    const member = w.as(IdentityService, w.tokens.member);
    assert.equal(await codeOf(member.createUser({ username: "sneaky", password: USER_PASSWORD })), Code.PermissionDenied);
    assert.equal(await codeOf(member.listUsers({})), Code.PermissionDenied);
    assert.equal((await member.getUser({ id: w.userIds["member"]! })).id, w.userIds["member"]);
    assert.equal(await codeOf(member.getUser({ id: w.userIds["reader"]! })), Code.NotFound);
    const bad = await w.admin(IdentityService).createUser({ username: "Bad Name", password: "short" }).catch((e: unknown) => ConnectError.from(e));
    assert.ok(bad instanceof ConnectError && bad.code === Code.InvalidArgument);
    assert.ok(!bad.rawMessage.includes("short"), "the password is not echoed");
    const gone = await w.admin(IdentityService).createUser({ username: "leaving", password: USER_PASSWORD });
    const session = (await w.as(IdentityService, undefined).login({ username: "leaving", password: USER_PASSWORD })).accessToken;
    await w.admin(IdentityService).deleteUser({ id: gone.id });
    assert.equal(await codeOf(w.as(IdentityService, session).whoAmI({})), Code.Unauthenticated);
  });

  test("signing key rotation: new logins use the new key; tokens of the old one keep working until they expire", async () => {
    const before = w.tokens.member!;
    const oldKid = decodeProtectedHeader(before).kid;
    const key = await w.admin(IdentityService).rotateSigningKey({});
    assert.notEqual(key.id, oldKid);
    assert.equal((await w.as(IdentityService, before).whoAmI({})).id, w.userIds["member"]);
    const fresh = (await w.as(IdentityService, undefined).login({ username: (await w.as(IdentityService, before).whoAmI({})).name, password: USER_PASSWORD })).accessToken;
    assert.equal(decodeProtectedHeader(fresh).kid, key.id);
    const keys = await w.admin(IdentityService).listSigningKeys({});
    assert.ok(keys.signingKeys.some((k) => k.id === oldKid && k.retiredAt));
    assert.ok(keys.signingKeys.every((k) => !("d" in (JSON.parse(k.publicJwk) as object))), "no private half");
    assert.equal(await codeOf(w.as(IdentityService, w.tokens.member).rotateSigningKey({})), Code.PermissionDenied);
  });
});

describe("local trust and the first start", () => {
  test("on loopback without TLS a call without a token is the system admin; one with a token is authenticated as usual", async () => {
    const w = await startWorld({ localTrust: true });
    try {
      assert.equal((await w.as(IdentityService, undefined).whoAmI({})).principalKind, "local");
      assert.ok((await w.as(VMService, undefined).listVMs({})).vms.length > 0);
      assert.equal(await codeOf(w.as(VMService, w.tokens.reader).startVM({ id: w.vmA })), Code.PermissionDenied);
      assert.equal(await codeOf(w.as(VMService, w.tokens["expired-token"]).getVM({ id: w.vmA })), Code.Unauthenticated);
      assert.ok(w.lines.some((l) => l.includes("local trust mode")));
    } finally {
      await w.close();
    }
  });

  test("the first start makes the admin (a generated password, shown once, not in the log) and the default project; a restart does not", async () => {
    const store = new MemoryStore();
    const shown: string[] = [];
    const logged: string[] = [];
    const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "memory" }, logLevel: "silent", demo: true });
    const start = () => startControlPlane(config, { store, simulatedHosts: createSimulatedHost, log: { log: (l, m, f) => logged.push(JSON.stringify({ l, m, ...f })) }, announce: (t) => shown.push(t) });
    const cp = await start();
    await cp.close();
    assert.equal(shown.length, 1);
    const password = /\n {4}(\S+)\n/.exec(shown[0]!)![1]!;
    assert.ok(password.length >= 20);
    assert.match(shown[0]!, /shown once/);
    assert.ok(!logged.join("\n").includes(password));
    // The demo VMs belong to a project that exists.
    assert.equal((await store.of(PROJECT_KIND).get(DEFAULT_PROJECT_ID))?.name, "default");
    const second = await start();
    try {
      assert.equal(shown.length, 1, "shown once in the life of the store");
      const users = await store.of(USER_KIND).list({ order: { field: "username", desc: false }, limit: 10 });
      assert.deepEqual(users.items.map((u) => u.username), ["admin"]);
      const token = (await (await import("@connectrpc/connect")).createClient(IdentityService, (await import("@connectrpc/connect-node")).createConnectTransport({ baseUrl: second.url, httpVersion: "1.1" })).login({ username: "admin", password })).accessToken;
      assert.ok(token.split(".").length === 3);
    } finally {
      await second.close();
    }
  });
});

test("the login limiter's memory is bounded: at most maxKeys buckets, however many names and addresses fail", async () => {
  const clock = new FakeClock(1_000_000);
  const limiter = new LoginLimiter({ burst: 2, perMinute: 1, maxKeys: 100 }, clock);
  for (let i = 0; i < 10_000; i++) limiter.failed(`user-${i}`, `10.0.${i >> 8}.${i & 255}`);
  assert.ok(limiter.size <= 100, `${limiter.size} buckets`);
  // A bucket refills and goes away.
  limiter.failed("alice", "10.9.9.9");
  limiter.failed("alice", "10.9.9.9");
  assert.throws(() => limiter.check("alice", "10.1.1.1"), (e: unknown) => ConnectError.from(e).code === Code.ResourceExhausted);
  await clock.advance(3 * 60_000);
  limiter.check("alice", "10.1.1.1");
});
