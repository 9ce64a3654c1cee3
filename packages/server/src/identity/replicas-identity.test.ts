/** Identity across replicas of one PostgreSQL database: one bootstrap, and a revocation reaches every replica (through the store's watch). */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { DEFAULT_PROJECT_ID, USER_KIND } from "@quantix/core";
import { silentLogger } from "@quantix/rpc";
import { startPostgres, until, type TestPostgres } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { ADMIN_PASSWORD } from "../testing/identity-world.js";

let pg: TestPostgres;
let replicas: ControlPlane[] = [];
const announced: string[] = [];

before(async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase("identity_replicas");
  const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "postgres", url }, logLevel: "silent", demo: false, localTrust: false, shutdownGraceMs: 1000 });
  // Started together: they race to bootstrap the cluster's identity.
  replicas = await Promise.all([0, 1].map(() => startControlPlane(config, { log: silentLogger, announce: (t) => announced.push(t) })));
});

after(async () => {
  for (const r of replicas) await r.close();
  await pg?.stop();
});

const client = <S extends Parameters<typeof createClient>[0]>(service: S, url: string, token?: string) =>
  createClient(service, createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [(next) => (req) => (token && req.header.set("authorization", `Bearer ${token}`), next(req))] }));

test("replicas starting together bootstrap once; a token revoked on one stops on the other, its open watch too", async () => {
  const [a, b] = replicas as [ControlPlane, ControlPlane];
  assert.equal(announced.length, 1, "one admin password, shown once");
  const users = await a.store.of(USER_KIND).list({ order: { field: "username", desc: false }, limit: 10 });
  assert.deepEqual(users.items.map((u) => u.username), ["admin"]);
  const password = /\n {4}(\S+)\n/.exec(announced[0]!)![1]!;
  assert.notEqual(password, ADMIN_PASSWORD);

  const jwt = (await client(IdentityService, a.url).login({ username: "admin", password })).accessToken;
  // The access token signed on A verifies on B (the signing keys are the cluster's).
  assert.equal((await client(IdentityService, b.url, jwt).whoAmI({})).name, "admin");
  const { token, secret } = await client(IdentityService, a.url, jwt).createToken({ name: "roaming", projectId: DEFAULT_PROJECT_ID, role: Role.READER });
  await until(async () => ((await client(VMService, b.url, secret).listVMs({})).vms ? true : undefined), "the token to work on replica B");

  let ended: ConnectError | undefined;
  let synced = false;
  void (async () => {
    try {
      for await (const u of client(VMService, b.url, secret).watchVMs({})) if (u.type === 4) synced = true;
    } catch (err) {
      ended = ConnectError.from(err);
    }
  })();
  await until(() => (synced ? true : undefined), "the watch on B to be live");
  await client(IdentityService, a.url, jwt).revokeToken({ id: token!.id });
  const refused = await until(async () => {
    const code = await client(VMService, b.url, secret).listVMs({}).then(() => undefined, (e: unknown) => ConnectError.from(e).code);
    return code;
  }, "replica B to refuse the revoked token");
  assert.equal(refused, Code.Unauthenticated);
  await until(() => ended, "the watch on B to end");
  assert.equal(ended!.code, Code.Unauthenticated);
});
