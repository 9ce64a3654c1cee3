import assert from "node:assert/strict";
import { after, before, describe, it, test } from "node:test";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { RetryInfoSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { AuditRecordSchema, type AuditRecord } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_pb.js";
import { AuditService } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_service_pb.js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { VpnServiceManager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { VpnType } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { QuotaService } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { DEFAULT_PROJECT_ID, LOCAL_PRINCIPAL, type Principal } from "@quantix/core";
import { principalKey, type Logger } from "@quantix/rpc";
import { collect, rejection, until } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { idFieldsOf } from "./audit-interceptor.js";

const SECRET = "wg-private-key-SHOULD-NEVER-BE-STORED-7f3a";

// A stand-in for the identity work's authentication and policy: a principal from a test
// header, and a refusal when another header says so.
const fakeAuth: Interceptor = (next) => (req) => {
  const who = req.header.get("x-test-user");
  if (who) req.contextValues.set(principalKey, { ...LOCAL_PRINCIPAL, kind: "user", id: who, name: `user ${who}`, tokenId: "tok-1" } as Principal);
  if (req.header.get("x-test-deny") === "yes") throw new ConnectError("the policy refuses this call", Code.PermissionDenied);
  return next(req);
};

const lines: string[] = [];
const log: Logger = { log: (level, msg, fields) => void lines.push(JSON.stringify({ level, msg, ...fields })) };
let cp: ControlPlane;
before(async () => {
  cp = await startControlPlane(loadConfig({ QUANTIX_DEFAULT_QUOTA: '{"vms": 3}' }, { port: 0, store: { kind: "memory" }, demo: false, logLevel: "debug", defaultDeadlineMs: 2000, shutdownGraceMs: 1000 }), { log, interceptors: [fakeAuth] });
});
after(() => cp?.close());

const connect = () => createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" });
const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };

/** A new project's id (projects are the identity work's; the local trust mode is a system admin). */
const project = async (name: string) => (await createClient(ProjectService, connect()).createProject({ name })).id;

async function records(filter: Parameters<ReturnType<typeof createClient<typeof AuditService>>["listAuditRecords"]>[0] = {}): Promise<AuditRecord[]> {
  await cp.audit.flush();
  return (await createClient(AuditService, connect()).listAuditRecords({ pageSize: 1000, ...filter })).auditRecords;
}

describe("the audit trail", () => {
  it("records a write that succeeded: principal, RPC, the id created, project, code, time, request id, source; reads are not recorded", async () => {
    const vms = createClient(VMService, connect());
    let echoed: string | null = null;
    const t0 = Date.now();
    const vm = await vms.createVM({ name: "audited", spec }, { headers: { "x-request-id": "req-create-1", "x-test-user": "alice" }, onHeader: (h) => (echoed = h.get("x-request-id")) });
    assert.equal(echoed, "req-create-1");
    const before = (await records()).length;
    await vms.getVM({ id: vm.id });
    await vms.listVMs({});
    const [r] = await records({ procedure: "/Quantixkvm.compute.v1.VMService/CreateVM", principalId: "alice" });
    assert.ok(r);
    assert.deepEqual(
      [r.principal?.kind, r.principal?.id, r.principal?.name, r.principal?.tokenId, r.targetIds, r.projectId, r.code, r.requestId, r.sourceAddress],
      ["user", "alice", "user alice", "tok-1", [vm.id], DEFAULT_PROJECT_ID, "ok", "req-create-1", "127.0.0.1"],
    );
    const ms = Number(r.time!.seconds) * 1000;
    assert.ok(ms >= t0 - 1000 && ms <= Date.now(), "the call's time");
    assert.equal((await records()).length, before, "reads leave no record");
  });

  it("records refused writes with their code: INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND, RESOURCE_EXHAUSTED (quota); the request id is in the error", async () => {
    const vms = createClient(VMService, connect());
    const bad = await rejection(vms.createVM({ name: "Not A Valid Name!", spec: { cpu: { cores: 0 } } }, { headers: { "x-test-user": "bob" } }));
    assert.equal(bad.code, Code.InvalidArgument);
    const generated = bad.metadata.get("x-request-id");
    assert.match(generated ?? "", /^[0-9a-f-]{36}$/);
    const denied = await rejection(vms.deleteVM({ id: "11111111-2222-3333-4444-555555555555" }, { headers: { "x-test-user": "bob", "x-test-deny": "yes", "x-request-id": "req-denied" } }));
    assert.equal(denied.code, Code.PermissionDenied);
    const missing = await rejection(vms.startVM({ id: "99999999-2222-3333-4444-555555555555" }, { headers: { "x-test-user": "bob" } }));
    assert.equal(missing.code, Code.NotFound);
    // QUANTIX_DEFAULT_QUOTA is vms=3: a project's fourth VM is refused.
    const p = await project("audit-quota");
    for (let i = 0; i < 3; i++) await vms.createVM({ name: `q${i}`, projectId: p, spec });
    const full = await rejection(vms.createVM({ name: "q3", projectId: p, spec }, { headers: { "x-test-user": "bob" } }));
    assert.equal(full.code, Code.ResourceExhausted);
    assert.equal(full.rawMessage, `quota vms of project ${p} exceeded: limit 3, used 3, requested 1`);

    const bobs = await records({ principalId: "bob", orderBy: "time" });
    assert.deepEqual(
      bobs.map((r) => [r.procedure.split("/").pop(), r.code, r.targetIds.join(","), r.projectId]),
      [
        ["CreateVM", "invalid_argument", "", ""],
        ["DeleteVM", "permission_denied", "11111111-2222-3333-4444-555555555555", ""],
        ["StartVM", "not_found", "99999999-2222-3333-4444-555555555555", ""],
        ["CreateVM", "resource_exhausted", "", p],
      ],
    );
    assert.equal(bobs[0]!.requestId, generated);
    assert.equal(bobs[1]!.requestId, "req-denied");
    // Filters: codes, project, a time range, principal kind.
    assert.deepEqual((await records({ principalId: "bob", codes: ["permission_denied", "not_found"] })).map((r) => r.code).sort(), ["not_found", "permission_denied"]);
    assert.equal((await records({ projectId: p, codes: ["ok"] })).length, 3);
    const future = { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 };
    assert.equal((await records({ principalId: "bob", timeFrom: future })).length, 0);
    assert.equal((await records({ principalId: "bob", timeTo: future })).length, 4);
    // Local trust mode (loopback, no TLS): a call without a token is the machine's operator.
    assert.ok((await records({ principalKind: "local" })).length >= 3, "calls without a token act as the local operator");
    // A call whose credentials are refused has no principal: it is recorded as anonymous.
    const forged = await rejection(vms.deleteVM({ id: "11111111-2222-3333-4444-555555555555" }, { headers: { authorization: "Bearer forged" } }));
    assert.equal(forged.code, Code.Unauthenticated);
    assert.deepEqual((await records({ principalKind: "anonymous" })).map((r) => [r.procedure.split("/").pop(), r.code]), [["DeleteVM", "unauthenticated"]]);
  });

  for (const [name, transport] of Object.entries({ "gRPC (the fast path)": () => createGrpcTransport({ baseUrl: cp.url }), "gRPC-Web": () => createGrpcWebTransport({ baseUrl: cp.url, httpVersion: "1.1" }) } as Record<string, () => Transport>)) {
    it(`records writes over ${name} too`, async () => {
      const vm = await createClient(VMService, transport()).createVM({ name: `over-${name.length}`, projectId: await project(`audit-proto-${name.length}`), spec }, { headers: { "x-test-user": `carol-${name.length}` } });
      const [r] = await records({ principalId: `carol-${name.length}` });
      assert.deepEqual([r?.targetIds, r?.code], [[vm.id], "ok"]);
    });
  }

  it("WatchAuditRecords follows new records from a resource version", async () => {
    const audit = createClient(AuditService, connect());
    const { resourceVersion } = await audit.listAuditRecords({ pageSize: 1 });
    const ac = new AbortController();
    const watched = collect(audit.watchAuditRecords({ principalId: "dave", resourceVersion }, { signal: ac.signal }), (xs) => xs.some((u) => u.type === EventType.ADDED));
    await createClient(VMService, connect()).createVM({ name: "watched", projectId: await project("audit-watch"), spec }, { headers: { "x-test-user": "dave" } });
    const got = await watched;
    ac.abort();
    const added = got.find((u) => u.type === EventType.ADDED)!;
    assert.equal(added.auditRecord?.procedure, "/Quantixkvm.compute.v1.VMService/CreateVM");
  });

  it("stores no request field but ids: a secret in a request reaches neither the record nor the log", async () => {
    const vpn = createClient(VpnServiceManager, connect());
    // The request carries a WireGuard private key; the project does not exist, so it is refused after the key was read.
    const err = await rejection(vpn.createVpnService({ name: "v", projectId: "p-secret", spec: { type: VpnType.WIREGUARD, networkId: "0d000000-0000-4000-8000-0000000000aa", protocolConfig: { case: "wireguard", value: { privateKey: SECRET } } } }, { headers: { "x-test-user": "erin" } }));
    assert.equal(err.code, Code.NotFound);
    const [r] = await records({ principalId: "erin" });
    assert.deepEqual([r?.procedure, r?.code, r?.projectId], ["/Quantixkvm.network.v1.VpnServiceManager/CreateVpnService", "not_found", "p-secret"]);
    const everything = (await records()).map((x) => toJsonString(AuditRecordSchema, x)).join("\n");
    assert.ok(!everything.includes(SECRET), "the secret is in an audit record");
    assert.ok(!lines.join("\n").includes(SECRET), "the secret is in the log");
  });

  it("QuotaService: SetQuota sets limits that creates then meet; GetQuota of a project with nothing answers zero use", async () => {
    const quotas = createClient(QuotaService, connect());
    const p = await project("audit-setquota");
    const empty = await quotas.getQuota({ projectId: p });
    assert.deepEqual([empty.projectId, empty.used?.vms, empty.resourceVersion], [p, 0n, 0n]);
    const set = await quotas.setQuota({ projectId: p, limits: { vms: 1n, vcpus: -1n } });
    assert.deepEqual([set.limits?.vms, set.limits?.vcpus, set.limits?.memoryMib], [1n, -1n, undefined]);
    const vms = createClient(VMService, connect());
    await vms.createVM({ name: "only", projectId: p, spec });
    const full = await rejection(vms.createVM({ name: "second", projectId: p, spec }));
    assert.equal(full.code, Code.ResourceExhausted);
    assert.equal((await quotas.getQuota({ projectId: p })).used?.vms, 1n);
    const bad = await rejection(quotas.setQuota({ projectId: p, limits: { vms: -2n } }));
    assert.equal(bad.code, Code.InvalidArgument);
    assert.match(bad.rawMessage, /limits\.vms: must be -1 \(unlimited\) or between 0 and/);
    const [rec] = await records({ procedure: "/Quantixkvm.quota.v1.QuotaService/SetQuota", projectId: p, codes: ["ok"] });
    assert.ok(rec, "SetQuota is audited");
    // DeleteVM names no project and answers Empty: its record has the VM's project, read before it went.
    const only = (await vms.listVMs({ projectId: p })).vms[0]!;
    await vms.deleteVM({ id: only.id });
    const [del] = await records({ procedure: "/Quantixkvm.compute.v1.VMService/DeleteVM", projectId: p });
    assert.deepEqual([del?.targetIds, del?.code], [[only.id], "ok"]);
    assert.equal((await quotas.getQuota({ projectId: p })).used?.vms, 0n, "the deletion released the quota");
  });
});

test("the id fields of a request are the only ones read: never `password`, `secret` or a body", () => {
  const field = (name: string) => ({ name, localName: name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), fieldKind: "scalar", scalar: 9 });
  const input = { fields: ["password", "secret", "user_id", "name", "project_id", "id", "token", "member_ids"].map(field) };
  const output = { fields: ["id", "secret", "project_id"].map(field) };
  const f = idFieldsOf({ input, output } as never);
  assert.deepEqual(f.targets.map((x) => x.name), ["user_id", "id", "member_ids"]);
  assert.equal(f.project?.name, "project_id");
  assert.equal(f.createdId?.name, "id");
});

test("QUANTIX_RATE_LIMIT_RPS: a caller past its burst gets RESOURCE_EXHAUSTED with RetryInfo, and the refused writes are audited", async () => {
  const limited = await startControlPlane(loadConfig({ QUANTIX_RATE_LIMIT_RPS: "1", QUANTIX_RATE_LIMIT_BURST: "2" }, { port: 0, store: { kind: "memory" }, demo: false, logLevel: "silent" }));
  try {
    const vms = createClient(VMService, createConnectTransport({ baseUrl: limited.url, httpVersion: "1.1" }));
    // Six at once: two tokens, and one more a second, so some are refused however slow this machine is.
    const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => vms.createVM({ name: `rl-${i}`, spec })));
    const refused = results.filter((r) => r.status === "rejected").map((r) => ConnectError.from((r as PromiseRejectedResult).reason));
    assert.ok(refused.length >= 1 && refused.every((e) => e.code === Code.ResourceExhausted), refused.map(String).join("; "));
    const [retry] = refused[0]!.findDetails(RetryInfoSchema);
    assert.ok(retry?.retryDelay && (retry.retryDelay.seconds > 0n || retry.retryDelay.nanos > 0), "RetryInfo says when to retry");
    await limited.audit.flush();
    // The audit trail's reads are calls too: wait out the bucket (poll, no fixed sleep).
    const audit = createClient(AuditService, createConnectTransport({ baseUrl: limited.url, httpVersion: "1.1" }));
    const page = await until(() => audit.listAuditRecords({ codes: ["resource_exhausted"], pageSize: 100 }).catch(() => undefined), "the audit trail to answer", 10_000, 250);
    assert.equal(page.totalCount, refused.length);
  } finally {
    await limited.close();
  }
});
