import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { createSimulatedHost, dirImporter, dirUploader } from "@quantix/agent";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { create } from "@bufbuild/protobuf";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { CreateVirtualNetworkRequestSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { randomIds, systemClock, type Store } from "@quantix/core";
import { DEMO_IMAGES, NetworkServiceImpl, startControlPlane, type ControlPlane, loadConfig, SIMULATED_TOLERATION, type ControlPlaneConfig } from "@quantix/server";
import { silentLogger } from "@quantix/rpc";

/**
 * The placement a test VM needs to run on the demo's simulated nodes: they carry a taint
 * (quantix.io/simulated=true:NoSchedule) that only VMs tolerating it on purpose pass.
 */
export const ON_SIMULATED_NODES = { tolerations: [{ ...SIMULATED_TOLERATION }] };
/** A kernel the demo's simulated hosts have (DEMO_IMAGES): a VM on them naming another path is refused. */
export const SIMULATED_KERNEL = DEMO_IMAGES.find((p) => p.endsWith("/vmlinuz"))!;

/** The first admin's password of every test control plane (QUANTIX_ADMIN_PASSWORD). */
export const TEST_ADMIN_PASSWORD = "test-admin-password-0123";

/** An interceptor sending `Authorization: Bearer <token>`. */
export const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

/** Logs in as the test control plane's admin (over Connect; `caPem` for TLS) and returns the access token. */
export async function loginAsAdmin(url: string, caPem?: string): Promise<string> {
  const t = createConnectTransport({ baseUrl: url, httpVersion: "1.1", ...(caPem ? { nodeOptions: { ca: caPem } } : {}) });
  return (await createClient(IdentityService, t).login({ username: "admin", password: TEST_ADMIN_PASSWORD })).accessToken;
}

/** A control plane on a free loopback port whose demo nodes run fast simulated hosts. */
export interface TestServer {
  readonly cp: ControlPlane;
  readonly url: string;
  /** Clients acting as the system admin: local trust, or with `adminToken` when the server asks for tokens (TLS). */
  readonly vms: Client<typeof VMService>;
  readonly nodes: Client<typeof NodeService>;
  /** The admin's access token when the server is not in local trust mode. */
  readonly adminToken: string | undefined;
  /** A Connect transport acting as the system admin. */
  readonly transport: Transport;
  close(): Promise<void>;
}

/** Starts a real control plane on 127.0.0.1:0 with the demo data unless told otherwise; with TLS, `caPem` is what its clients trust. */
export async function startTestServer(overrides: Partial<ControlPlaneConfig> = {}, store?: Store, caPem?: string): Promise<TestServer> {
  const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "memory" }, logLevel: "silent", simBootMs: 40, defaultDeadlineMs: 5000, shutdownGraceMs: 2000, ...overrides });
  // The first start's generated admin password is not shown in the test's output.
  const cp = await startControlPlane(config, { log: silentLogger, simulatedHosts: createSimulatedHost, dirImporter, dirUploader, adminPassword: TEST_ADMIN_PASSWORD, announce: () => undefined, ...(store ? { store } : {}) });
  let adminToken: string | undefined;
  try {
    adminToken = config.localTrust ? undefined : await loginAsAdmin(cp.url, caPem);
  } catch (err) {
    await cp.close();
    throw err;
  }
  const transport = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", ...(caPem ? { nodeOptions: { ca: caPem } } : {}), ...(adminToken ? { interceptors: [bearer(adminToken)] } : {}) });
  return {
    cp,
    url: cp.url,
    vms: createClient(VMService, transport),
    nodes: createClient(NodeService, transport),
    adminToken,
    transport,
    close: () => cp.close(),
  };
}

/** Transports for every protocol the server speaks, against one base URL. */
export function transports(url: string): Record<string, Transport> {
  return {
    "connect-json-h1": createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
    "connect-binary-h2": createConnectTransport({ baseUrl: url, httpVersion: "2", useBinaryFormat: true }),
    "grpc-h2": createGrpcTransport({ baseUrl: url }),
    "grpc-web-h1": createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1" }),
  };
}

/**
 * An EXTERNAL network (floating IPs' and routers' addresses) on a test server whose nodes
 * have no network data plane: made through the control plane's own network service, with
 * the nodes' support for its physical network "ext" answered as if node "test-uplink"
 * mapped it. The addresses it hands out come from `cidr`'s .10–.19.
 */
export async function testExternalNetwork(s: TestServer, name: string, cidr = "203.0.113.0/24"): Promise<VirtualNetwork> {
  const base = cidr.split("/")[0]!.split(".").slice(0, 3).join(".");
  const networks = new NetworkServiceImpl({ store: s.cp.store, clock: systemClock, ids: randomIds, featureSupport: async () => ({ supported: ["test-uplink"], reasons: [] }) });
  return networks.create(create(CreateVirtualNetworkRequestSchema, { name, spec: { type: NetworkType.EXTERNAL, cidr, physicalNetwork: "ext", dhcp: { rangeStart: `${base}.10`, rangeEnd: `${base}.19` } } }));
}
