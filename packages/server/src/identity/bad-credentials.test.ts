/** Bad input of issue 12: forged, expired, tampered, alg none and wrong-audience tokens, revocation mid-stream, brute force, and secrets kept out of logs and errors. */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { create, toJsonString } from "@bufbuild/protobuf";
import { NodeSpecSchema, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { allOf, ALL_KINDS, AUDIT_RECORD_KIND, NODE_KIND } from "@quantix/core";
import { SignJWT } from "jose";
import { until } from "@quantix/testing";
import { ADMIN_PASSWORD, PROTOCOLS, startWorld, USER_PASSWORD, type World } from "../testing/identity-world.js";

const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");

/**
 * What the store holds, audit records aside (refused calls are recorded: that is the
 * trail's point). A node is compared by its spec and labels: the demo's simulated hosts
 * heartbeat on their own (a new resource version every interval), which no call made.
 */
async function state(w: World): Promise<string[]> {
  const out: string[] = [];
  for (const kind of ALL_KINDS) {
    if (kind === (AUDIT_RECORD_KIND as unknown)) continue;
    for await (const o of allOf(w.cp.store.of(kind))) {
      if (kind === (NODE_KIND as unknown)) {
        const n = o as unknown as Node;
        out.push(`${kind.name}/${n.id}:${toJsonString(NodeSpecSchema, n.spec ?? create(NodeSpecSchema))}:${JSON.stringify(n.labels)}`);
      } else out.push(`${kind.name}/${o.id}@${o.resourceVersion}`);
    }
  }
  return out.sort();
}

describe("bad credentials", () => {
  let w: World;
  before(async () => {
    w = await startWorld({ loginFailureBurst: 3, loginFailuresPerMin: 1 });
  });
  after(() => w.close());

  test("forged, expired, tampered, alg none, wrong audience or issuer, not yet valid, unknown key: UNAUTHENTICATED on every protocol, nothing changes", async () => {
    const now = Math.floor(Date.now() / 1000);
    const valid = await w.forge({});
    const [h, p, s] = valid.split(".");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString()) as Record<string, unknown>;
    const otherKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const header = JSON.parse(Buffer.from(h!, "base64url").toString()) as Record<string, unknown>;
    const bad: Record<string, string> = {
      "signed by another key under the cluster's kid": await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: header["kid"] as string }).sign(otherKey),
      "signed by an unknown key": await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "not-a-key" }).sign(otherKey),
      expired: await w.forge({ iatSec: now - 7200, nbfSec: now - 7200, expSec: now - 3600 }),
      "payload tampered (another user)": `${h}.${b64({ ...claims, sub: w.userIds["project-admin"] })}.${s}`,
      "signature tampered": `${h}.${p}.${s!.slice(0, -4)}${s!.endsWith("AAAA") ? "BBBB" : "AAAA"}`,
      "alg none": `${b64({ alg: "none", typ: "JWT" })}.${p}.`,
      "alg HS256 with the public key as secret": `${b64({ alg: "HS256", kid: header["kid"] })}.${p}.${s}`,
      "wrong audience": await w.forge({ aud: "someone-else" }),
      "wrong issuer": await w.forge({ iss: "another-cluster" }),
      "not yet valid": await w.forge({ nbfSec: now + 3600, iatSec: now + 3600, expSec: now + 7200 }),
      "an API token with a wrong secret": `qtx_${"0".repeat(8)}-0000-0000-0000-${"0".repeat(12)}_${"A".repeat(43)}`,
      garbage: "not-a-token-at-all",
    };
    // The valid one works (so the failures are the tampering's).
    assert.equal((await w.call("grpc", VMService.method.getVM, { id: w.vmA }, valid)).code, 0);
    const before = await state(w);
    for (const [what, token] of Object.entries(bad)) {
      for (const protocol of PROTOCOLS) {
        for (const [m, req] of [
          [VMService.method.getVM, { id: w.vmA }],
          [VMService.method.createVM, { name: "forged", projectId: w.projectA, spec: SPEC }],
          [VMService.method.watchVMs, {}],
        ] as const) {
          const out = await w.call(protocol, m, req, token);
          assert.equal(out.code, Code.Unauthenticated, `${what}, ${m.name} over ${protocol}: ${out.code} ${out.message}`);
          assert.ok(!out.message.includes(token), "the error does not echo the token");
        }
      }
    }
    assert.deepEqual(await state(w), before, "no state changed");
    // Each refused write is in the audit trail, as refused, with no principal.
    await w.cp.audit.flush();
    const refused = [];
    for await (const r of allOf(w.cp.store.of(AUDIT_RECORD_KIND), { where: { code: "unauthenticated", procedure: "/Quantixkvm.compute.v1.VMService/CreateVM" } })) refused.push(r.principal?.kind);
    assert.deepEqual(refused, Array(Object.keys(bad).length * PROTOCOLS.length).fill("anonymous"));
    const malformed = await w.call("connect-json", VMService.method.getVM, { id: w.vmA }, undefined).then(() => w.as(VMService, undefined).getVM({ id: w.vmA }, { headers: { authorization: "Basic abc" } }).catch((e: unknown) => ConnectError.from(e)));
    assert.ok(malformed instanceof ConnectError && malformed.code === Code.Unauthenticated && /Bearer <token>/.test(malformed.rawMessage));
  });

  test("oversized credentials: an 8 KiB token is UNAUTHENTICATED without being echoed; a header past the 64 KiB limit is refused before any handler; nothing changes", async () => {
    const before = await state(w);
    const big = `qtx_${"x".repeat(8 * 1024)}`;
    const huge = "y".repeat(100 * 1024);
    for (const protocol of PROTOCOLS) {
      const out = await w.call(protocol, VMService.method.createVM, { name: "oversized", projectId: w.projectA, spec: SPEC }, big);
      assert.equal(out.code, Code.Unauthenticated, `8 KiB over ${protocol}: ${out.code} ${out.message}`);
      assert.ok(out.message.length < 1024 && !out.message.includes("xxxxxxxx"), "the error does not echo the token");
      const refused = await w.call(protocol, VMService.method.createVM, { name: "oversized", projectId: w.projectA, spec: SPEC }, huge).catch((e: unknown) => ({ code: -1, message: String(e) }));
      assert.notEqual(refused.code, 0, `100 KiB over ${protocol} is not served`);
    }
    assert.deepEqual(await state(w), before, "no state changed");
    // The server still serves after the refusals.
    assert.equal((await w.call("grpc", VMService.method.getVM, { id: w.vmA }, await w.forge({}))).code, 0);
  });

  test("a revoked token stops at once, and its open watch ends with UNAUTHENTICATED, on every protocol", async () => {
    for (const protocol of PROTOCOLS) {
      const { token, secret } = await w.as(IdentityService, w.tokens.member).createToken({ name: `watch-${protocol}`, projectId: w.projectA, role: Role.READER });
      let ended: { code: Code | 0; message: string } | undefined;
      const watching = watch(w, protocol, secret, (e) => (ended = e));
      await until(() => (watching.synced() ? true : undefined), `the ${protocol} watch to be live`);
      await w.as(IdentityService, w.tokens.member).revokeToken({ id: token!.id });
      await until(() => ended, `the ${protocol} watch to end`);
      assert.equal(ended!.code, Code.Unauthenticated, `${protocol}: ${ended!.message}`);
      assert.match(decodeURIComponent(ended!.message), /revoked/);
      const after = await w.call(protocol, VMService.method.getVM, { id: w.vmA }, secret);
      assert.equal(after.code, Code.Unauthenticated);
    }
  });

  test("brute force: after the burst of failed logins, RESOURCE_EXHAUSTED with RetryInfo, even with the right password; never which of user or password was wrong", async () => {
    const ids = w.as(IdentityService, undefined);
    const fail = async (username: string, password: string) => ids.login({ username, password }).then(() => assert.fail("logged in"), (e: unknown) => ConnectError.from(e));
    const wrongUser = await fail("nobody-here", "whatever-password");
    const wrongPassword = await fail("admin", "not-the-password");
    assert.equal(wrongUser.code, Code.Unauthenticated);
    assert.equal(wrongPassword.code, Code.Unauthenticated);
    assert.equal(wrongUser.rawMessage, wrongPassword.rawMessage);
    await fail("admin", "still-not-it");
    await fail("admin", "nor-this");
    const limited = await fail("admin", ADMIN_PASSWORD);
    assert.equal(limited.code, Code.ResourceExhausted, limited.message);
    const retry = limited.findDetails(RetryInfoSchema)[0];
    assert.ok(retry?.retryDelay && retry.retryDelay.seconds > 0n, "a RetryInfo with a delay");
    // Another user from the same address is limited too (per source), over gRPC as well.
    const out = await w.call("grpc", IdentityService.method.login, { username: "member", password: USER_PASSWORD }, undefined);
    assert.equal(out.code, Code.ResourceExhausted);
  });

  test("secrets never reach the log or an error: passwords, token secrets, access tokens, hashes, private keys", async () => {
    const secrets = [ADMIN_PASSWORD, USER_PASSWORD, ...Object.values(w.tokens).filter((t): t is string => !!t)];
    const { secret } = await w.as(IdentityService, w.tokens.member).createToken({ name: "logged", projectId: w.projectA, role: Role.READER });
    // The secret part follows "qtx_<36-character id>_" (it may itself contain "_").
    secrets.push(secret, secret.slice("qtx_".length + 36 + 1));
    await w.as(VMService, secret).getVM({ id: w.vmA });
    await w.as(IdentityService, w.tokens.member).setPassword({ oldPassword: "wrong-old-password", newPassword: "another-long-password" }).catch(() => undefined);
    const listed = await w.admin(IdentityService).listTokens({});
    assert.ok(listed.tokens.length > 0);
    const text = JSON.stringify(listed, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
    assert.ok(secrets.every((s) => s.length >= 20), "every secret looked for is long enough to mean something");
    for (const s of secrets) assert.ok(!text.includes(s), "ListTokens carries no secret");
    const log = w.lines.join("\n");
    assert.ok(log.includes("IdentityService/Login"), "the log was captured");
    for (const s of secrets) assert.ok(!log.includes(s), `a secret (${s.slice(0, 4)}…) reached the log`);
    assert.ok(!/\$argon2id\$/.test(log) && !/"d":"/.test(log), "no hash or private key in the log");
  });
});

/** Opens WatchVMs with `token` over `protocol`; `onEnd` gets how it ended. */
function watch(w: World, protocol: (typeof PROTOCOLS)[number], token: string, onEnd: (e: { code: Code | 0; message: string }) => void): { synced(): boolean } {
  let synced = false;
  if (protocol === "grpc") {
    w.watchGrpc(VMService.method.watchVMs, {}, token, (m) => ((m as { type: number }).type === 4 ? (synced = true) : undefined), onEnd);
  } else {
    const client = protocol === "connect-json" ? w.as(VMService, token) : w.asGrpcWeb(VMService, token);
    void (async () => {
      try {
        for await (const u of client.watchVMs({})) if (u.type === 4) synced = true;
        onEnd({ code: 0, message: "ended" });
      } catch (err) {
        const e = ConnectError.from(err);
        onEnd({ code: e.code, message: e.rawMessage });
      }
    })();
  }
  return { synced: () => synced };
}
