import { randomUUID } from "node:crypto";
import { create, fromBinary, toBinary, type DescMethod, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { PrincipalType, Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { createSimulatedHost } from "@quantix/agent";
import { CREDENTIAL_KIND, SIGNING_KEY_KIND } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { importJWK, SignJWT, type JWK } from "jose";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig, type ControlPlaneConfig } from "../config.js";
import { AUDIENCE } from "../identity/access-tokens.js";

/** The bootstrap admin's password in tests. */
export const ADMIN_PASSWORD = "correct-horse-battery-staple";
/** The password of every user a world makes. */
export const USER_PASSWORD = "a-long-test-password-1";

/** The callers of the role matrix. */
export const CALLERS = ["system-admin", "project-admin", "member", "reader", "member-of-other", "no-token", "expired-token"] as const;
export type CallerName = (typeof CALLERS)[number];

/** Protocols a call can take: Connect JSON over HTTP/1.1, gRPC-Web, and gRPC from @grpc/grpc-js (the fast path). */
export const PROTOCOLS = ["connect-json", "grpc-web", "grpc"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** How a call ended: 0 for success (or a stream still open after its first message or a pause). */
export interface Outcome {
  readonly code: Code | 0;
  readonly message: string;
  readonly value?: unknown;
  readonly error?: ConnectError;
}

/** A control plane requiring tokens (local trust off), with projects A and B, users in roles, and a VM in each. */
export interface World {
  readonly cp: ControlPlane;
  readonly url: string;
  /** Every log line the control plane wrote, as JSON. */
  readonly lines: string[];
  readonly projectA: string;
  readonly projectB: string;
  readonly vmA: string;
  readonly vmB: string;
  /** Bearer tokens by caller (undefined: none). */
  readonly tokens: Readonly<Record<CallerName, string | undefined>>;
  /** User ids by caller. */
  readonly userIds: Readonly<Record<string, string>>;
  call(protocol: Protocol, method: DescMethod, req: Record<string, unknown>, token: string | undefined): Promise<Outcome>;
  /** A Connect client with the admin's token. */
  admin<S extends DescService>(service: S): Client<S>;
  /** A Connect client with a token. */
  as<S extends DescService>(service: S, token: string | undefined): Client<S>;
  /** A gRPC-Web client with a token. */
  asGrpcWeb<S extends DescService>(service: S, token: string | undefined): Client<S>;
  /** A server stream over @grpc/grpc-js (the fast path): `onMessage` per message, `onEnd` once with how it ended. */
  watchGrpc(method: DescMethod, req: Record<string, unknown>, token: string | undefined, onMessage: (m: unknown) => void, onEnd: (e: { code: Code | 0; message: string }) => void): () => void;
  /** A JWT signed with the cluster's signing key, with claims changed (for bad-token tests). */
  forge(claims: { sub?: string; aud?: string; iss?: string; expSec?: number; nbfSec?: number; iatSec?: number }): Promise<string>;
  close(): Promise<void>;
}

const bearer = (token: string | undefined): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

/** Starts a world. */
export async function startWorld(overrides: Partial<ControlPlaneConfig> = {}): Promise<World> {
  const lines: string[] = [];
  const log: Logger = { log: (level, msg, fields) => lines.push(JSON.stringify({ level, msg, ...fields })) };
  const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "memory" }, logLevel: "debug", simBootMs: 40, defaultDeadlineMs: 3000, shutdownGraceMs: 1000, localTrust: false, ...overrides });
  const cp = await startControlPlane(config, { log, simulatedHosts: createSimulatedHost, adminPassword: ADMIN_PASSWORD, announce: (t) => lines.push(t) });
  const h1 = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1" });
  const transports: Record<Exclude<Protocol, "grpc">, Transport> = { "connect-json": h1, "grpc-web": createGrpcWebTransport({ baseUrl: cp.url, httpVersion: "1.1" }) };
  const grpcClient = new grpc.Client(`127.0.0.1:${cp.port}`, grpc.credentials.createInsecure());
  const as = <S extends DescService>(service: S, token: string | undefined): Client<S> =>
    createClient(service, createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [(next) => (req) => (token && req.header.set("authorization", `Bearer ${token}`), next(req))] }));

  const asGrpcWeb = <S extends DescService>(service: S, token: string | undefined): Client<S> =>
    createClient(service, createGrpcWebTransport({ baseUrl: cp.url, httpVersion: "1.1", interceptors: [(next) => (req) => (token && req.header.set("authorization", `Bearer ${token}`), next(req))] }));
  const login = async (username: string, password: string) => (await as(IdentityService, undefined).login({ username, password })).accessToken;
  const adminToken = await login("admin", ADMIN_PASSWORD);
  const admin = <S extends DescService>(service: S) => as(service, adminToken);
  const projects = admin(ProjectService);
  const tag = randomUUID().slice(0, 6);
  const projectA = (await projects.createProject({ name: `a-${tag}` })).id;
  const projectB = (await projects.createProject({ name: `b-${tag}` })).id;
  const userIds: Record<string, string> = {};
  const tokens: Partial<Record<CallerName, string | undefined>> = { "system-admin": adminToken, "no-token": undefined };
  for (const [name, project, role] of [
    ["project-admin", projectA, Role.ADMIN],
    ["member", projectA, Role.MEMBER],
    ["reader", projectA, Role.READER],
    ["member-of-other", projectB, Role.MEMBER],
  ] as const) {
    const username = `${name}-${tag}`;
    const u = await admin(IdentityService).createUser({ username, password: USER_PASSWORD });
    userIds[name] = u.id;
    await projects.setRoleBinding({ projectId: project, principalType: PrincipalType.USER, principalId: u.id, role });
    tokens[name] = await login(username, USER_PASSWORD);
  }
  const vms = admin(VMService);
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
  const vmA = (await vms.createVM({ name: `vm-a-${tag}`, projectId: projectA, spec })).id;
  const vmB = (await vms.createVM({ name: `vm-b-${tag}`, projectId: projectB, spec })).id;

  const forge: World["forge"] = async (c) => {
    const keys = await cp.store.of(SIGNING_KEY_KIND).list({ order: { field: "created_at", desc: true }, limit: 10, countTotal: false });
    const key = keys.items.find((k) => !k.retiredAt)!;
    const cred = await cp.store.of(CREDENTIAL_KIND).get(key.id);
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: key.id })
      .setIssuer(c.iss ?? (await cp.store.clusterId()))
      .setAudience(c.aud ?? AUDIENCE)
      .setSubject(c.sub ?? userIds["member"]!)
      .setIssuedAt(c.iatSec ?? now)
      .setNotBefore(c.nbfSec ?? now)
      .setExpirationTime(c.expSec ?? now + 600)
      .sign(await importJWK(JSON.parse(cred!.privateJwk) as JWK, "ES256"));
  };
  const nowSec = Math.floor(Date.now() / 1000);
  tokens["expired-token"] = await forge({ iatSec: nowSec - 7200, nbfSec: nowSec - 7200, expSec: nowSec - 3600 });

  return {
    cp,
    url: cp.url,
    lines,
    projectA,
    projectB,
    vmA,
    vmB,
    tokens: tokens as Record<CallerName, string | undefined>,
    userIds,
    admin,
    as,
    asGrpcWeb,
    forge,
    watchGrpc: (method, req, token, onMessage, onEnd) => {
      const md = new grpc.Metadata();
      if (token) md.set("authorization", `Bearer ${token}`);
      const call = grpcClient.makeServerStreamRequest(`/${method.parent.typeName}/${method.name}`, (m: unknown) => Buffer.from(toBinary(method.input, create(method.input, m as never))), (b: Buffer) => fromBinary(method.output, b), req, md, {});
      let over = false;
      const end = (e: { code: Code | 0; message: string }) => {
        if (!over) onEnd(e);
        over = true;
      };
      call.on("data", onMessage);
      call.on("error", (err: grpc.ServiceError) => end({ code: err.code as unknown as Code, message: err.details }));
      call.on("end", () => end({ code: 0, message: "ended" }));
      return () => call.cancel();
    },
    call: (protocol, method, req, token) => (protocol === "grpc" ? grpcCall(grpcClient, method, req, token) : connectCall(transports[protocol], method, req, token)),
    close: async () => {
      grpcClient.close();
      await cp.close();
    },
  };
}

/**
 * A call's deadline. Refusals come before any work; an authorized call may wait for a node
 * (a power action) and end DEADLINE_EXCEEDED, which still says it was let in. A stream's
 * outcome is its first message or its error: every stream called here sends one or fails.
 */
const CALL_TIMEOUT_MS = 8000;

async function connectCall(transport: Transport, method: DescMethod, req: Record<string, unknown>, token: string | undefined): Promise<Outcome> {
  const client = createClient(method.parent, transport) as unknown as Record<string, (req: unknown, o: unknown) => unknown>;
  const fn = client[method.localName]!;
  try {
    if (method.methodKind === "unary") {
      const value = await (fn(req, { headers: bearer(token), timeoutMs: CALL_TIMEOUT_MS }) as Promise<unknown>);
      return { code: 0, message: "", value };
    }
    const ac = new AbortController();
    for await (const value of fn(req, { headers: bearer(token), signal: ac.signal, timeoutMs: CALL_TIMEOUT_MS }) as AsyncIterable<unknown>) {
      ac.abort();
      return { code: 0, message: "", value };
    }
    return { code: 0, message: "" };
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage, error: e };
  }
}

function grpcCall(client: grpc.Client, method: DescMethod, req: Record<string, unknown>, token: string | undefined): Promise<Outcome> {
  const path = `/${method.parent.typeName}/${method.name}`;
  const serialize = (m: unknown) => Buffer.from(toBinary(method.input, create(method.input, m as MessageInitShape<typeof method.input>)));
  const deserialize = (b: Buffer) => fromBinary(method.output, b);
  const md = new grpc.Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  return new Promise((resolve) => {
    if (method.methodKind === "unary") {
      client.makeUnaryRequest(path, serialize, deserialize, req, md, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, value) => {
        resolve(err ? { code: err.code as unknown as Code, message: err.details } : { code: 0, message: "", value });
      });
      return;
    }
    const call = client.makeServerStreamRequest(path, serialize, deserialize, req, md, { deadline: Date.now() + CALL_TIMEOUT_MS });
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      call.cancel();
      resolve(o);
    };
    call.on("data", (value: unknown) => finish({ code: 0, message: "", value }));
    call.on("error", (err: grpc.ServiceError) => finish({ code: err.code as unknown as Code, message: err.details }));
    call.on("end", () => finish({ code: 0, message: "" }));
  });
}
