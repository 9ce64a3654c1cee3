import { loadBalancerStats } from "./network/load-balancer-stats.js";
import { randomIds, systemClock, vmUsage, type Clock, type IdGenerator, type Store, VM_KIND, NODE_KIND } from "@quantix/core";
import type { ControlPlaneConfig } from "./config.js";
import { VmController } from "./controllers/vm-controller.js";
import { nodeAllocationController } from "./controllers/node-allocation.js";
import { unmanagedGuestsController } from "./controllers/unmanaged-guests.js";
import { ControllerManager } from "./runtime/manager.js";
import { EventRetention } from "./events/retention.js";
import { MigrationController } from "./controllers/migration-controller.js";
import { DrainController } from "./controllers/drain-controller.js";
import { NodeMonitor } from "./controllers/node-monitor.js";
import { VmScheduler } from "./controllers/vm-scheduler.js";
import { HaController } from "./controllers/ha-controller.js";
import { demoNodes, demoVms } from "./demo/demo-data.js";
import type { SimulatedHostFactory } from "./demo/simulated-host.js";
import { SimulatedNodes } from "./demo/simulated-nodes.js";
import { createFallback } from "./health.js";
import type { WorkersStatus } from "./workers.js";
import { attachAgentNodes, type AgentNodes } from "./hypervisor/agent-nodes.js";
import { NodeDrivers } from "./hypervisor/node-drivers.js";
import { RpcMetrics, startRpcServer, type Peer, type Route, type RpcServer } from "@quantix/rpc";
import type { Interceptor } from "@connectrpc/connect";
import { createJsonLogger, type Logger } from "@quantix/rpc";
import { PENDING_SERVICES, SERVED_ELSEWHERE, SERVED_FILES } from "./rpc/catalog.js";
import { consoleText } from "./console/console-text.js";
import { consoleWebSocket } from "./console/console-websocket.js";
import { dashboardFiles } from "./dashboard/dashboard-files.js";
import { controlPlaneMetrics } from "./metrics/control-plane-metrics.js";
import { nodeServiceRoute } from "./rpc/node-routes.js";
import { servedElsewhereImpl, unimplementedImpl } from "./rpc/unimplemented-routes.js";
import { vmServiceRoute } from "./rpc/vm-routes.js";
import { migrationServiceRoute } from "./rpc/migration-routes.js";
import { eventServiceRoute } from "./rpc/event-routes.js";
import { AUDIT_RETAINED, auditServiceRoute } from "./rpc/audit-routes.js";
import { AuditWriter } from "./audit/audit-writer.js";
import { quotaServiceRoute } from "./rpc/quota-routes.js";
import { QuotaLedger } from "./quota/quota-ledger.js";
import { quotaUsageController } from "./controllers/quota-usage.js";
import { NodeDrainService } from "./services/node-drain.js";
import { NodeService } from "./services/node-service.js";
import { VmMetricsStream } from "./services/vm-metrics-stream.js";
import { VmMigrationService } from "./services/vm-migration.js";
import { VmPowerService } from "./services/vm-power.js";
import { VmService } from "./services/vm-service.js";
import { openStore } from "./store/open-store.js";
import { AccessTokens } from "./identity/access-tokens.js";
import { Authenticator } from "./identity/authenticator.js";
import { bootstrapIdentity } from "./identity/bootstrap.js";
import { IdentityIndex } from "./identity/identity-index.js";
import { LoginLimiter } from "./identity/login-limiter.js";
import { ProjectService } from "./identity/project-service.js";
import { TokenService } from "./identity/token-service.js";
import { UserService } from "./identity/user-service.js";
import { identityServiceRoute } from "./rpc/identity-routes.js";
import { projectServiceRoute } from "./rpc/project-routes.js";
import { loadServerTls } from "./tls/server-tls.js";
import { ClusterCa } from "./enrollment/cluster-ca.js";
import { agentIdentityReader, agentPrincipalFromPeer } from "./enrollment/agent-identity.js";
import { EnrollmentService } from "./enrollment/enrollment-service.js";
import { enrollmentServiceRoute } from "./enrollment/enrollment-routes.js";
import { announceSecurityMode } from "./tls/security-mode.js";
import { join, resolve } from "node:path";
import { NodeStorages } from "./storage/node-storages.js";
import { StoragePoolService } from "./services/storage-pool-service.js";
import { VolumeService } from "./services/volume-service.js";
import { storagePoolController } from "./controllers/storage-pool-controller.js";
import { volumeController } from "./controllers/volume-controller.js";
import { imageController } from "./controllers/image-controller.js";
import { imageServiceRoute } from "./rpc/image-routes.js";
import { ImageUploads } from "./services/image-upload.js";
import { ImageService } from "./services/image-service.js";
import type { DirImporterFactory, DirUploaderFactory } from "./storage/node-storage.js";
import { volumeAttachmentController } from "./controllers/volume-attachment-controller.js";
import { resolveVolumePaths } from "./storage/vm-volumes.js";
import { snapshotServiceRoute, storagePoolServiceRoute, volumeServiceRoute } from "./rpc/storage-routes.js";
import { networkRoutes } from "./rpc/network-routes.js";
import { snapshotController } from "./controllers/snapshot-controller.js";
import { SnapshotService } from "./services/snapshot-service.js";
import { SecurityGroupService } from "./services/security-group-service.js";
import { networkController } from "./network/network-controller.js";
import { requireNicPorts, waitNicPortsOn } from "./network/vm-nic-ports.js";
import { openGateway, type Gateway } from "./gateway/gateway.js";
import { apiInterceptors } from "./rpc/api-interceptors.js";

/** A running control plane. */
export interface ControlPlane {
  readonly port: number;
  /** Base URL, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly store: Store;
  readonly vmController: VmController;
  /** The node hypervisors this replica reaches (agents, the demo's simulated hosts). */
  readonly drivers: NodeDrivers;
  /** The controllers, running while this replica leads the store. */
  readonly controllers: ControllerManager;
  readonly simulated: SimulatedNodes;
  /** The agent nodes this replica drives (undefined until it leads). */
  readonly agents: AgentNodes | undefined;
  /** Writes the audit trail (flush() in tests, to read records at once). */
  readonly audit: AuditWriter;
  /** The MemoryGateway's documents and sessions. */
  readonly gateway: Gateway;
  /** Graceful shutdown: streams end cleanly, in-flight calls finish, then connections close. */
  close(): Promise<void>;
}

/** Optional replacements for the composition root's defaults (tests). */
export interface ControlPlaneDeps {
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  readonly log?: Logger;
  readonly store?: Store;
  /** Starts the simulated hosts of demo nodes (the agent package's createSimulatedHost); without it they stay unconnected. */
  readonly simulatedHosts?: SimulatedHostFactory;
  /** The agent's image import for the simulated hosts' pools (the agent package's dirImporter); without it they refuse imports. */
  readonly dirImporter?: DirImporterFactory;
  /** The agent's image upload for the simulated hosts' pools (the agent package's dirUploader); without it they refuse uploads. */
  readonly dirUploader?: DirUploaderFactory;
  /** The first admin's password (QUANTIX_ADMIN_PASSWORD); without it one is generated and announced once. */
  readonly adminPassword?: string | undefined;
  /** Where a generated admin password is shown, once (default: stdout; never the log). */
  readonly announce?: (text: string) => void;
  /** Interceptors run inside the audit trail, authentication, the rate limit and policy (tests). */
  readonly interceptors?: readonly Interceptor[];
  /** Under QUANTIX_WORKERS: the primary's latest word on every worker, shown by /_/health. */
  readonly workersStatus?: () => WorkersStatus | undefined;
}

/** The composition root of the control plane: picks implementations and wires them. */
export async function startControlPlane(config: ControlPlaneConfig, deps: ControlPlaneDeps = {}): Promise<ControlPlane> {
  const clock = deps.clock ?? systemClock;
  const ids = deps.ids ?? randomIds;
  const log = deps.log ?? createJsonLogger(config.logLevel);
  // Certificates first: a bad file stops the start before anything is opened.
  const tls = await loadServerTls(config);
  const ca = config.ca ? await ClusterCa.load(config.ca) : undefined;
  const controlPlaneCert = ca ? await ca.controlPlaneClient() : undefined;
  // With TLS, agents prove which node they are (their enrolled certificate); without, anyone may register.
  const agentOf = config.tls ? (ca ? agentIdentityReader(ca) : () => undefined) : undefined;
  const store = deps.store ?? (await openStore(config.store, config.storeTuning, log));
  const startedAt = clock.now();

  try {
    if (config.demo) {
      const seeded = await store.seedOnce(async () => {
        for (const n of demoNodes(startedAt)) await store.of(NODE_KIND).create(n);
        // Counted in the demo project's quota, never refused by a default limit.
        const seeding = new QuotaLedger({ store, clock, defaults: {} });
        for (const vm of demoVms(startedAt)) await seeding.commit(vm.projectId, vmUsage(vm), [{ op: "create", kind: VM_KIND as never, object: vm }], "api");
      });
      if (seeded) log.log("info", "seeded demo data into the new store", { nodes: 3, vms: 4 });
    }
    await bootstrapIdentity({ store, ids, clock, log, adminPassword: deps.adminPassword, announce: deps.announce ?? ((t) => process.stdout.write(t)) });
  } catch (err) {
    await store.close();
    throw err;
  }
  // Who may act: every replica's view, kept by the store's watch (a revocation reaches all).
  const identity = new IdentityIndex(store, log);
  await identity.start();
  const clusterId = await store.clusterId();
  const access = new AccessTokens({ store, index: identity, clock, issuer: clusterId, ttlSec: config.accessTokenTtlSec });
  const authenticator = new Authenticator({ index: identity, access, store, clock });
  const users = new UserService({ store, index: identity, access, limiter: new LoginLimiter({ burst: config.loginFailureBurst, perMinute: config.loginFailuresPerMin }, clock), clock, ids });
  const tokens = new TokenService({ store, index: identity, clock, ids, accessTokenTtlSec: config.accessTokenTtlSec });
  const projects = new ProjectService({ store, index: identity, clock, ids });

  const drivers = new NodeDrivers();
  const ledger = new QuotaLedger({ store, clock, defaults: config.defaultQuota });
  const defaultGroups = new SecurityGroupService({ store, clock, ids });
  const vmService = new VmService({ store, clock, ids, ledger, ensureDefaultGroup: (projectId) => defaultGroups.ensureDefault(projectId) });
  // The demo's simulated hosts keep their pools under the storage directory (real qemu-img files); agent nodes through their agent.
  // Absolute: the simulated hosts' agents take volume files as disks only by absolute path
  // (QUANTIX_DATA_DIR defaults to a relative ./.quantix-data).
  const chosenStorageDir = config.storageDir ?? (config.store.kind === "embedded" ? join(config.store.dataDir, "storage") : undefined);
  const storageDir = chosenStorageDir === undefined ? undefined : resolve(chosenStorageDir);
  const storages = new NodeStorages({ storageDir, sharedDirs: config.sharedDirs, agentStorage: (id) => agents.get(id)?.storage, ...(deps.dirImporter ? { dirImporter: deps.dirImporter } : {}), ...(deps.dirUploader ? { dirUploader: deps.dirUploader } : {}) });
  // A VM's volume disks are the volumes' files on its node; its NICs on ports wait for the ports to be set up there.
  const vmController = new VmController({
    store,
    drivers,
    clock,
    log,
    volumePaths: async (vm) => {
      await requireNicPorts(store, vm, vm.status?.nodeId ?? "");
      return resolveVolumePaths(store, storages, vm.status?.nodeId ?? "", vm.spec!);
    },
  });
  const poolService = new StoragePoolService({ store, clock, ids });
  const volumeService = new VolumeService({ store, clock, ids, ledger, drivers, storages });
  const snapshotService = new SnapshotService({ store, clock, ids });
  const imageService = new ImageService({ store, clock, ids });
  const imageUploads = new ImageUploads({ store, storages, clock, log });
  const nodeService = new NodeService({ store, clock, ids, nodeLostAfterSec: config.nodeLostAfterSec, decommission: { drivers, holder: vmController, log } });
  const power = new VmPowerService(store, drivers);
  const migration = new VmMigrationService({ store, drivers, clock, ids, log, strategy: config.schedulerStrategy });
  const migrationController = new MigrationController({ store, drivers, clock, ids, log, storages, nicsReadyOn: (vm, nodeId, signal) => waitNicPortsOn((id) => agents.get(id)?.network, vm, nodeId, signal) });
  const vmMetrics = new VmMetricsStream({ store, drivers, clock });
  const drains = new NodeDrainService({ store, nodes: nodeService, clock, log });
  const drainController = new DrainController({ store, migrations: migration, power, clock, log });
  const scheduler = new VmScheduler({ store, clock, log, strategy: config.schedulerStrategy, isConnected: (id) => drivers.has(id) });
  const simulated = new SimulatedNodes({ store, drivers, nodes: nodeService, log, hosts: deps.simulatedHosts, bootMs: config.simBootMs, volumeDirs: (nodeId) => (storageDir ? [join(storageDir, nodeId), ...config.sharedDirs] : []), volumePaths: (vm) => resolveVolumePaths(store, storages, vm.status?.nodeId ?? "", vm.spec!) });
  const monitor = new NodeMonitor({ store, clock, log, offlineAfterSec: config.nodeLostAfterSec });
  const ha = new HaController({ store, drivers, clock, log });
  // Every replica connects to the agents (console, metrics, reboot and migrations are served
  // by whichever replica a client reaches; nothing in these connections writes the store).
  // The demo's simulated hosts run in this process without an agent endpoint: never both.
  const agents: AgentNodes = attachAgentNodes({
    store,
    drivers,
    log,
    clock,
    clusterId,
    ...(config.tls ? { enrolledOnly: { dial: ca && controlPlaneCert ? { ca: ca.certPem, cert: controlPlaneCert.certPem, key: controlPlaneCert.keyPem } : undefined } } : {}),
  });
  // Controllers run on one replica at a time (the store's leader); every replica serves the API.
  const controllers = new ControllerManager({ store, log, onLost: () => process.exit(1) });
  controllers.add(simulated, vmController, nodeAllocationController({ store, clock, log }), unmanagedGuestsController({ store, drivers, clock, log }), scheduler, migrationController, drainController, ha, new EventRetention({ store, clock, log, retentionSec: config.eventRetentionSec }), new EventRetention({ store, clock, log, retentionSec: config.auditRetentionSec, kept: AUDIT_RETAINED }), quotaUsageController({ store, clock, log }), storagePoolController({ store, storages, clock, log }), volumeController({ store, storages, clock, log }), volumeAttachmentController({ store, clock, log }), snapshotController({ store, storages, drivers, clock, log }), imageController({ store, storages, clock, log }), networkController({ store, clock, ids, log, network: (id) => agents.get(id)?.network }), { start: async () => monitor.start(), stop: async () => monitor.stop() });
  // The controllers start (campaign, first listings, then their first passes) while the
  // rest of the start runs and the API opens: a restart is ready to answer calls before
  // the controllers have looked at every object again, as a follower replica answers
  // without running them (issue 19: with 10,000 VMs on the embedded store the listener
  // waited 15 s behind the controllers' first passes). startControlPlane still resolves
  // only once they run.
  const controllersStarted = controllers.start();
  controllersStarted.catch(() => undefined);

  // The MemoryGateway's documents live in the same store (its own tables and versions).
  // Documents over 256 KiB go to files under the embedded store's data directory.
  const gateway = await openGateway(store, log, { blobDir: config.store.kind === "embedded" ? join(config.store.dataDir, "documents") : undefined, historyVersions: config.gatewayHistoryVersions });
  // Counted where each call is logged (the kit's observeCalls interceptor), read by GET /metrics.
  const rpcMetrics = new RpcMetrics();
  const routes: Route[] = [
    vmServiceRoute(store, vmService, power, migration, vmMetrics, config.defaultDeadlineMs),
    nodeServiceRoute(store, nodeService, drains, agentOf),
    enrollmentServiceRoute(new EnrollmentService({ store, clock, ids, ca })),
    migrationServiceRoute(store),
    eventServiceRoute(store),
    identityServiceRoute(store, users, tokens),
    projectServiceRoute(store, projects, config.defaultDeadlineMs),
    quotaServiceRoute(store, clock),
    auditServiceRoute(store),
    storagePoolServiceRoute(store, poolService, config.defaultDeadlineMs),
    volumeServiceRoute(store, volumeService, config.defaultDeadlineMs),
    snapshotServiceRoute(store, snapshotService, config.defaultDeadlineMs),
    imageServiceRoute(store, imageService, imageUploads, config.defaultDeadlineMs),
    // Networking (issue 14): VirtualNetworkService, PortService, SecurityGroupService.
    ...networkRoutes({ store, clock, ids, ledger, defaultDeadlineMs: config.defaultDeadlineMs, network: (id) => agents.get(id)?.network, loadBalancerStats: (lb) => loadBalancerStats({ store, clock, network: (id) => agents.get(id)?.network }, lb) }),
    gateway.route,
    ...PENDING_SERVICES.map((p) => ({ service: p.service, impl: unimplementedImpl(p.service, p.arrivesWith) })),
    ...SERVED_ELSEWHERE.map((p) => ({ service: p.service, impl: servedElsewhereImpl(p.service, p.where) })),
  ];
  const audit = new AuditWriter({ store, log });
  const interceptors: Interceptor[] = [
    ...apiInterceptors({ config, store, audit, clock, log, auth: authenticator, index: identity, ...(agentOf ? { certificatePrincipal: (peer: Peer) => agentPrincipalFromPeer(agentOf, peer) } : {}) }),
    ...(deps.interceptors ?? []),
  ];
  let server: RpcServer;
  // The console's doors for curl and browsers call the RPCs in process, with the request's credentials.
  const selfTransport = (peer: Peer) => server.inProcessTransport(peer);
  const consoleTextDoor = consoleText(selfTransport);
  const consoleWsDoor = consoleWebSocket(selfTransport);
  // The web dashboard at / (its built files; never the API's paths).
  const dashboardDoor = dashboardFiles(config.dashboardDir);
  const baseFallback = createFallback(store, startedAt, () => clock.now(), controlPlaneMetrics({ store, rpc: rpcMetrics, controllers }), deps.workersStatus);
  let stopAnnouncing: () => void = () => undefined;
  // What runs besides the listener, stopped once no call is left (close(), or a start that
  // fails once the controllers began): the calls' audit records are written before the store closes.
  const stopUnserved = async () => {
    await audit.close();
    await controllersStarted.catch(() => undefined);
    await controllers.stop();
    await agents.stop();
    identity.stop();
    await gateway.close();
    await store.close();
  };
  const stopServed = async (graceMs: number) => {
    stopAnnouncing();
    consoleWsDoor.close();
    await server.close(graceMs);
    await stopUnserved();
  };
  try {
    server = await startRpcServer({
      host: config.host,
      port: config.port,
      routes,
      interceptors,
      reflection: SERVED_FILES,
      log,
      metrics: rpcMetrics,
      fallback: (req, res) => consoleTextDoor(req, res) || dashboardDoor(req, res) || baseFallback(req, res),
      upgrade: consoleWsDoor,
      limits: {
        readMaxBytes: config.maxRequestBytes,
        writeMaxBytes: config.maxResponseBytes,
        maxConcurrentStreams: config.maxConcurrentStreams,
        idleTimeoutMs: config.idleTimeoutMs,
        headersTimeoutMs: config.headersTimeoutMs,
        maxConnectionsPerSource: config.maxConnectionsPerSource,
      },
      ...(tls ? { tls } : {}),
    });
  } catch (err) {
    await stopUnserved();
    throw err;
  }
  log.log("info", "control plane listening", { url: server.url, protocols: ["connect", "grpc", "grpc-web"], http: config.tls ? ["1.1", "h2"] : ["1.1", "h2c"], tls: config.tls !== undefined, store: config.store.kind });
  stopAnnouncing = announceSecurityMode(config, server.url, log);
  try {
    await controllersStarted;
  } catch (err) {
    await stopServed(0);
    throw err;
  }
  if (controllers.leading) log.log("info", "controllers running (their first passes go on in the background)");
  let closing: Promise<void> | undefined;
  return {
    port: server.port,
    url: server.url,
    store,
    vmController,
    controllers,
    drivers,
    simulated,
    audit,
    gateway,
    get agents() {
      return agents;
    },
    close() {
      closing ??= stopServed(config.shutdownGraceMs);
      return closing;
    },
  };
}
