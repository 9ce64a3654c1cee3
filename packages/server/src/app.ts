import { randomIds, systemClock, type Clock, type IdGenerator, type Store } from "@quantix/core";
import type { ControlPlaneConfig } from "./config.js";
import { VmReconciler } from "./controllers/vm-reconciler.js";
import { NodeMonitor } from "./controllers/node-monitor.js";
import { VmScheduler } from "./controllers/vm-scheduler.js";
import { HaController } from "./controllers/ha-controller.js";
import { demoNodes, demoVms } from "./demo/demo-data.js";
import { SimulatedNodes } from "./demo/simulated-nodes.js";
import { createFallback } from "./health.js";
import { attachAgentNodes, type AgentNodes } from "./hypervisor/agent-nodes.js";
import { NodeDrivers } from "./hypervisor/node-drivers.js";
import { route, RpcMetrics, startRpcServer, type Route, type RpcServer } from "@quantix/rpc";
import { createJsonLogger, type Logger } from "./log.js";
import { PENDING_SERVICES, SERVED_FILES } from "./rpc/catalog.js";
import { controlPlaneMetrics } from "./metrics/control-plane-metrics.js";
import { nodeServiceImpl } from "./rpc/node-routes.js";
import { unimplementedImpl } from "./rpc/unimplemented-routes.js";
import { vmServiceImpl } from "./rpc/vm-routes.js";
import { NodeService as NodeServiceDesc } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { NodeDrainService } from "./services/node-drain.js";
import { NodeService } from "./services/node-service.js";
import { VmMetricsStream } from "./services/vm-metrics-stream.js";
import { VmMigrationService } from "./services/vm-migration.js";
import { VmPowerService } from "./services/vm-power.js";
import { VmService } from "./services/vm-service.js";
import { openStore } from "./store/open-store.js";

/** A running control plane. */
export interface ControlPlane {
  readonly port: number;
  /** Base URL, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly store: Store;
  readonly reconciler: VmReconciler;
  readonly simulated: SimulatedNodes;
  /** The agent nodes this replica drives (undefined until it leads). */
  readonly agents: AgentNodes | undefined;
  /** Graceful shutdown: streams end cleanly, in-flight calls finish, then connections close. */
  close(): Promise<void>;
}

/** Optional replacements for the composition root's defaults (tests). */
export interface ControlPlaneDeps {
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  readonly log?: Logger;
  readonly store?: Store;
}

/** The composition root of the control plane: picks implementations and wires them. */
export async function startControlPlane(config: ControlPlaneConfig, deps: ControlPlaneDeps = {}): Promise<ControlPlane> {
  const clock = deps.clock ?? systemClock;
  const ids = deps.ids ?? randomIds;
  const log = deps.log ?? createJsonLogger(config.logLevel);
  const store = deps.store ?? (await openStore(config.store, config.storeTuning, log));
  const startedAt = clock.now();

  try {
    if (config.demo) {
      const seeded = await store.seedOnce(async () => {
        for (const n of demoNodes(startedAt)) await store.nodes.create(n);
        for (const vm of demoVms(startedAt)) await store.vms.create(vm);
      });
      if (seeded) log.log("info", "seeded demo data into the new store", { nodes: 3, vms: 4 });
    }
  } catch (err) {
    await store.close();
    throw err;
  }

  const drivers = new NodeDrivers();
  const vmService = new VmService({ store, clock, ids });
  const reconciler = new VmReconciler({ store, drivers, clock, log });
  const nodeService = new NodeService({ store, clock, ids, nodeLostAfterSec: config.nodeLostAfterSec, decommission: { drivers, holder: reconciler, log } });
  const power = new VmPowerService(store, reconciler);
  const migration = new VmMigrationService({ store, drivers, holder: reconciler, clock, log, strategy: config.schedulerStrategy });
  const vmMetrics = new VmMetricsStream({ store, drivers, clock });
  const drains = new NodeDrainService({ store, nodes: nodeService, migration, power, drivers, clock, log });
  const scheduler = new VmScheduler({ store, clock, log, strategy: config.schedulerStrategy, isConnected: (id) => drivers.has(id) });
  const simulated = new SimulatedNodes({ store, drivers, nodes: nodeService, clock, log, timing: { bootMs: config.simBootMs, shutdownMs: Math.round(config.simBootMs * 0.7), suspendMs: Math.round(config.simBootMs * 0.7) } });
  const monitor = new NodeMonitor({ store, clock, log, offlineAfterSec: config.nodeLostAfterSec });
  const ha = new HaController({ store, drivers, clock, log });
  // Every replica connects to the agents (console, metrics, reboot and migrations are served
  // by whichever replica a client reaches; nothing in these connections writes the store).
  // The demo's in-process simulated nodes have no agent endpoint, so the two never overlap.
  const agents: AgentNodes = attachAgentNodes({ store, drivers, log });
  // Controllers run on one replica at a time (the store's leader); every replica serves the API.
  let controllers: Promise<void> | undefined;
  const resign = store.lead((leader) => {
    if (leader) {
      log.log("info", "leading: running the controllers on this replica");
      controllers = (async () => {
        await simulated.start();
        await reconciler.start();
        await scheduler.start();
        await ha.start();
        monitor.start();
      })();
      return;
    }
    // Another replica may lead by now: carrying on would let two reconcile the same VMs.
    log.log("error", "lost the store's leadership (its connection dropped): exiting so a supervisor restarts this replica cleanly");
    process.exit(1);
  });
  // A store nobody else shares leads at once: start serving with the controllers running.
  await new Promise((r) => setImmediate(r));
  await controllers;

  // Counted where each call is logged (the kit's observeCalls interceptor), read by GET /metrics.
  const rpcMetrics = new RpcMetrics();
  const routes: Route[] = [
    route(VMService, vmServiceImpl(vmService, power, migration, vmMetrics, config.defaultDeadlineMs)),
    route(NodeServiceDesc, nodeServiceImpl(nodeService, drains)),
    ...PENDING_SERVICES.map((p) => ({ service: p.service, impl: unimplementedImpl(p.service, p.arrivesWith) })),
  ];
  let server: RpcServer;
  try {
    server = await startRpcServer({
      host: config.host,
      port: config.port,
      routes,
      reflection: SERVED_FILES,
      log,
      metrics: rpcMetrics,
      fallback: createFallback(store, startedAt, () => clock.now(), controlPlaneMetrics({ store, rpc: rpcMetrics })),
      limits: { readMaxBytes: config.maxRequestBytes, writeMaxBytes: config.maxResponseBytes, maxConcurrentStreams: config.maxConcurrentStreams },
    });
  } catch (err) {
    await resign();
    await agents.stop();
    await ha.stop();
    await scheduler.stop();
    await reconciler.stop();
    await simulated.stop();
    monitor.stop();
    await store.close();
    throw err;
  }
  log.log("info", "control plane listening", { url: server.url, protocols: ["connect", "grpc", "grpc-web"], http: ["1.1", "h2c"], store: config.store.kind });
  let closing: Promise<void> | undefined;
  return {
    port: server.port,
    url: server.url,
    store,
    reconciler,
    simulated,
    get agents() {
      return agents;
    },
    close() {
      closing ??= (async () => {
        await server.close(config.shutdownGraceMs);
        await resign();
        monitor.stop();
        await ha.stop();
        await agents.stop();
        await simulated.stop();
        await scheduler.stop();
        await reconciler.stop();
        await store.close();
      })();
      return closing;
    },
  };
}
