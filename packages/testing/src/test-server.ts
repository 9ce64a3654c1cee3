import type { Client, Transport } from "@connectrpc/connect";
import { createSimulatedHost } from "@quantix/agent";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import type { Store } from "@quantix/core";
import { startControlPlane, type ControlPlane, loadConfig, SIMULATED_TOLERATION, type ControlPlaneConfig } from "@quantix/server";
import { silentLogger } from "@quantix/rpc";

/**
 * The placement a test VM needs to run on the demo's simulated nodes: they carry a taint
 * (quantix.io/simulated=true:NoSchedule) that only VMs tolerating it on purpose pass.
 */
export const ON_SIMULATED_NODES = { tolerations: [{ ...SIMULATED_TOLERATION }] };

/** A control plane on a free loopback port whose demo nodes run fast simulated hosts. */
export interface TestServer {
  readonly cp: ControlPlane;
  readonly url: string;
  readonly vms: Client<typeof VMService>;
  readonly nodes: Client<typeof NodeService>;
  close(): Promise<void>;
}

/** Starts a real control plane on 127.0.0.1:0 with the demo data unless told otherwise; with TLS, `caPem` is what its clients trust. */
export async function startTestServer(overrides: Partial<ControlPlaneConfig> = {}, store?: Store, caPem?: string): Promise<TestServer> {
  const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "memory" }, logLevel: "silent", simBootMs: 40, defaultDeadlineMs: 5000, shutdownGraceMs: 2000, ...overrides });
  const cp = await startControlPlane(config, { log: silentLogger, simulatedHosts: createSimulatedHost, ...(store ? { store } : {}) });
  const transport = createConnectTransport({ baseUrl: cp.url, httpVersion: "1.1", ...(caPem ? { nodeOptions: { ca: caPem } } : {}) });
  return {
    cp,
    url: cp.url,
    vms: createClient(VMService, transport),
    nodes: createClient(NodeService, transport),
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
