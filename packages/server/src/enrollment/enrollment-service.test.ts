import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { JOIN_TOKEN_KIND, nodeUri, randomIds } from "@quantix/core";
import { certificateInfo, createClusterCa, createCsr } from "@quantix/rpc";
import { FakeClock, quantixRejection } from "@quantix/testing";
import { MemoryStore } from "../store/memory-store.js";
import { ClusterCa } from "./cluster-ca.js";
import { EnrollmentService } from "./enrollment-service.js";

// Join tokens: stored as a hash, used once, refused when wrong, expired, revoked or
// replayed; a bad CSR leaves the token unused.

let dir: string;
let ca: ClusterCa;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-enroll-"));
  const made = await createClusterCa("unit CA", 1);
  await writeFile(join(dir, "ca.crt"), made.certPem);
  await writeFile(join(dir, "ca.key"), made.keyPem, { mode: 0o600 });
  ca = await ClusterCa.load({ certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") });
});
after(() => rm(dir, { recursive: true, force: true }));

const refusal = quantixRejection;

describe("EnrollmentService", () => {
  const clock = new FakeClock(Date.now());
  const store = new MemoryStore();
  const svc = () => new EnrollmentService({ store, clock, ids: randomIds, ca });

  test("a token is stored as the SHA-256 of its secret and shown once", async () => {
    const { token, joinToken } = await svc().createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName: "host-1", ttlSeconds: 0 });
    assert.match(token, /^qjt_[0-9a-f-]+\.[A-Za-z0-9_-]{43}$/);
    const stored = await store.of(JOIN_TOKEN_KIND).get(joinToken!.id);
    assert.equal(stored?.secretSha256.length, 32);
    assert.ok(!JSON.stringify(stored, (_k, v) => (typeof v === "bigint" ? String(v) : v)).includes(token.split(".")[1]!), "the secret is not stored");
    assert.equal(joinToken!.secretSha256.length, 0, "the hash is not shown");
    assert.equal((await svc().list("host-1"))[0]?.secretSha256.length, 0);
  });

  test("enroll: the certificate names the token's node; the token is then spent", async () => {
    const { token, joinToken } = await svc().createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName: "host-2", ttlSeconds: 600 });
    const { csrPem } = await createCsr("host-2");
    const res = await svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem });
    assert.equal(res.nodeId, joinToken!.nodeId);
    assert.deepEqual(certificateInfo(res.certificatePem).uris, [nodeUri(res.nodeId)]);
    const replay = await refusal(svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem: (await createCsr("host-2")).csrPem }));
    assert.equal(replay.code, "unauthenticated");
    assert.match(replay.message, /already used/);
  });

  test("two enrollments racing with one token: exactly one certificate", async () => {
    const { token } = await svc().createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName: "host-race", ttlSeconds: 600 });
    const csrs = await Promise.all(Array.from({ length: 8 }, () => createCsr("host-race")));
    const results = await Promise.allSettled(csrs.map((c) => svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem: c.csrPem })));
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
  });

  test("wrong, malformed, revoked and expired tokens are refused with UNAUTHENTICATED", async () => {
    const { csrPem } = await createCsr("host-3");
    const { token, joinToken } = await svc().createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName: "host-3", ttlSeconds: 60 });
    const wrongSecret = `${token.slice(0, -4)}AAAA` === token ? `${token.slice(0, -4)}BBBB` : `${token.slice(0, -4)}AAAA`;
    for (const t of [wrongSecret, "qjt_nope.abc", "not a token", `qjt_${randomIds.newId()}.${token.split(".")[1]}`]) {
      const e = await refusal(svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: t, csrPem }));
      assert.equal(e.code, "unauthenticated");
      assert.match(e.message, /the join token is not valid/);
    }
    await clock.advance(61_000);
    const expired = await refusal(svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem }));
    assert.deepEqual([expired.code, /expired/.test(expired.message)], ["unauthenticated", true]);
    await svc().delete(joinToken!.id);
    const revoked = await refusal(svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem }));
    assert.equal(revoked.code, "unauthenticated");
  });

  test("a bad CSR is INVALID_ARGUMENT on csr_pem and leaves the token unused", async () => {
    const { token, joinToken } = await svc().createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName: "host-4", ttlSeconds: 600 });
    const e = await refusal(svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----" }));
    assert.deepEqual([e.code, e.violations[0]?.field], ["invalid_argument", "csr_pem"]);
    assert.equal((await store.of(JOIN_TOKEN_KIND).get(joinToken!.id))?.useTime, undefined);
    await svc().enroll({ $typeName: "Quantixkvm.compute.v1.EnrollRequest", joinToken: token, csrPem: (await createCsr("host-4")).csrPem });
  });

  test("bad CreateJoinToken requests name the field", async () => {
    for (const [nodeName, ttlSeconds, field] of [["", 0, "node_name"], ["bad name", 0, "node_name"], ["ok", 10, "ttl_seconds"], ["ok", 700_000, "ttl_seconds"]] as const) {
      const e = await refusal(svc().createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName, ttlSeconds }));
      assert.deepEqual([e.code, e.violations[0]?.field], ["invalid_argument", field]);
    }
  });

  test("without a cluster CA, enrollment says what to configure", async () => {
    const none = new EnrollmentService({ store, clock, ids: randomIds, ca: undefined });
    const e = await refusal(none.createJoinToken({ $typeName: "Quantixkvm.compute.v1.CreateJoinTokenRequest", nodeName: "x", ttlSeconds: 0 }));
    assert.equal(e.code, "failed_precondition");
    assert.match(e.message, /QUANTIX_CA_CERT/);
  });
});

test("ListJoinTokens and DeleteJoinToken check their input; an unknown token is NOT_FOUND naming it", async () => {
  const svc = new EnrollmentService({ store: new MemoryStore(), clock: new FakeClock(), ids: randomIds, ca });
  assert.equal((await refusal(svc.list("bad name\u0000"))).code, "invalid_argument");
  assert.equal((await refusal(svc.delete(""))).code, "invalid_argument");
  assert.equal((await refusal(svc.delete("x\u0000y"))).code, "invalid_argument");
  const missing = await refusal(svc.delete("no-such-token"));
  assert.equal(missing.code, "not_found");
  assert.match(missing.message, /no-such-token/);
});
