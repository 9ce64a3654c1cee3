import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeService, UpdateHeartbeatRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { PowerState, VirtualMachineSchema, VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { CreateVMRequestSchema, VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { VM_KIND, type TxOp } from "@quantix/core";
import { loadConfig, migrate, PgliteDriver, SqlStore } from "@quantix/server";
import { npmStartArgs } from "@quantix/testing";
import { envelope, unenvelope } from "./grpc-frame.js";
import { connect, exchange, grpcHeaders, grpcStatus } from "./h2-client.js";
import { heapAfterGc, INSPECT_ENV } from "./inspector.js";
import { cpuSeconds, ROOT, rssBytes, startNode, startServer, type Server } from "./proc.js";
import { nowMs, percentile, sleep, withTimeout } from "./stats.js";

const PROJECT = "00000000-0000-0000-0000-000000000001";
const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
const CREATE_VM = "/Quantixkvm.compute.v1.VMService/CreateVM";
const UPDATE_HEARTBEAT = "/Quantixkvm.compute.v1.NodeService/UpdateHeartbeat";
const SERVER = "packages/server/src/main.ts";
const BARE_H2 = "bench/servers/bare-h2.ts";
/** A list or write that takes longer fails the row (at 52,776 VMs a ListVMs page did not answer in 20 s). */
const CALL_TIMEOUT_MS = 30_000;
const name = (i: number) => `scale-${String(i).padStart(6, "0")}`;
const hostname = (i: number) => `sim-node-${String(i).padStart(4, "0")}.bench`;

/** p50 and p99 of samples in ms. */
export interface Percentiles {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly samples: number;
  readonly error?: string;
}
const pct = (s: readonly number[]): Percentiles => ({ p50Ms: percentile(s, 50), p99Ms: percentile(s, 99), samples: s.length });

/** What the scale group measured. */
export interface ScaleResult {
  readonly store: "memory";
  readonly vms: number;
  /** The VMs asked for; `vms` is fewer when CreateVM ran out of its time budget. */
  readonly vmsAsked: number;
  readonly baselineVms: number;
  readonly nodes: number;
  readonly rssIdleBytes: number;
  readonly rssPerVmBytes: number;
  readonly rssPerNodeBytes: number;
  /** V8's used heap after a full GC, per node registered and heartbeated twice (RSS also counts heap V8 grew to and kept). */
  readonly heapPerNodeBytes: number;
  /** The same, kept per heartbeat: a heartbeat's version of its node, held by the change history until it is compacted. */
  readonly heapPerHeartbeatBytes: number;
  /** The change history's size in revisions (QUANTIX_HISTORY_REVISIONS's default, which this server runs with). */
  readonly historyRevisions: number;
  readonly createPerSec: number;
  readonly heartbeatCpuUs: number;
  readonly getVmCpuUs: number;
  readonly heartbeatIntervalSec: number;
  /** Server CPU in the windows with the agents heartbeating. */
  readonly steadyCpuPercent: number;
  /** The same VMs and nodes, in the windows between with the heartbeats paused. */
  readonly steadyPausedCpuPercent: number;
  readonly steadyHeartbeatsPerSec: number;
  /**
   * The baseline of the steady rows: a bare node:http2 server (bench/servers/bare-h2.ts,
   * CPU 0 as ours) answering the same UpdateHeartbeat calls with our answer's bytes, sent
   * by the same client over one h2c connection of its own in the same ticks, heartbeating
   * in the same windows: its CPU there and in the paused windows, as ours.
   */
  readonly bareSteadyCpuPercent: number;
  readonly bareSteadyPausedCpuPercent: number;
  readonly idleCpuPercent: number;
  readonly listSmall: Percentiles;
  readonly listLarge: Percentiles;
  readonly watchSmall: Percentiles;
  readonly watchLarge: Percentiles;
  readonly heartbeatErrors: number;
}

/** What restarting an embedded-store control plane with `vms` VMs costs, against one with `baselineVms`. */
export interface RestartResult {
  readonly vms: number;
  readonly baselineVms: number;
  readonly readyMs: number;
  readonly baselineReadyMs: number;
  readonly rssBytes: number;
  readonly baselineRssBytes: number;
}

/** CreateVM over gRPC (one h2c connection, 64 in flight) for names [from, to), stopping at `budgetMs`: how many it made. */
async function createVms(url: string, from: number, to: number, budgetMs = 600_000): Promise<{ made: number; perSec: number }> {
  const session = await connect(url);
  let next = from;
  let bad = 0;
  const t0 = nowMs();
  const worker = async () => {
    while (next < to && nowMs() - t0 < budgetMs) {
      const body = envelope(toBinary(CreateVMRequestSchema, create(CreateVMRequestSchema, { name: name(next++), projectId: PROJECT, spec: SPEC })));
      const x = await withTimeout(exchange(session, grpcHeaders(CREATE_VM), body), CALL_TIMEOUT_MS, "CreateVM").catch(() => undefined);
      if (!x || x.status !== 200 || grpcStatus(x) !== "0") bad++;
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  session.close();
  if (bad > 0) throw new Error(`${bad} CreateVM calls failed`);
  return { made: next - from, perSec: ((next - from) / (nowMs() - t0)) * 1000 };
}

/** Server CPU (user + system) per call of `call`, over `n` calls at `concurrency` in flight, in µs. */
async function cpuPerCall(pid: number, n: number, concurrency: number, call: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const c0 = cpuSeconds(pid);
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await call(next++);
  }));
  await sleep(300); // log lines are written in batches
  return ((cpuSeconds(pid) - c0) * 1e6) / n;
}

/** RSS once it stops moving: three samples 500 ms apart that agree within 1 MiB, or the last of 20. */
async function settledRss(pid: number): Promise<number> {
  let prev = rssBytes(pid);
  for (let i = 0; i < 20; i++) {
    await sleep(500);
    const cur = rssBytes(pid);
    if (Math.abs(cur - prev) < 1 << 20 && i >= 2) return cur;
    prev = cur;
  }
  return prev;
}

/**
 * The control plane (memory store, CPU 0) at scale: `nodes` simulated agents register
 * and heartbeat over the real gRPC API from this process, `vms` VMs made by CreateVM.
 * Memory per VM and per node are RSS deltas; CPU is the server process's over a window.
 */
/** Steady-state windows of one heartbeat interval each, heartbeating and paused in turn. */
const STEADY_WINDOWS = 6;
/** Heartbeats for their CPU against GetVM's, and for the heap each keeps. */
const HEARTBEATS = 5_000;
/** QUANTIX_HISTORY_REVISIONS's default, which the scale server runs with. */
const HISTORY_REVISIONS = loadConfig({}).storeTuning.historyRevisions;

export async function scaleBench(vms: number, nodes: number, createBudgetMs: number, progress: (msg: string) => void): Promise<{ result: ScaleResult; server: Server }> {
  const baselineVms = Math.min(1_000, vms);
  const server = await startServer("quantix-scale", SERVER, [], { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info", QUANTIX_SHUTDOWN_GRACE_MS: "2000", ...INSPECT_ENV });
  const transport = createGrpcTransport({ baseUrl: server.url });
  const vmApi = createClient(VMService, transport);
  const nodeApi = createClient(NodeService, transport);
  const rssIdleBytes = await settledRss(server.pid);

  progress(`scale: ${num(baselineVms)} VMs, then ListVMs pages of 100 and WatchVMs deliveries (the baselines)`);
  await createVms(server.url, 0, baselineVms);
  const listSmall = await listPages(vmApi, 200);
  const watchSmall = await watchDeliveries(vmApi, 50);

  progress(`scale: ${num(nodes)} simulated agents register (RegisterNode), then heartbeat once each`);
  const rssBeforeNodes = await settledRss(server.pid);
  const heapBeforeNodes = await heapAfterGc(server.logFile);
  const ids: string[] = [];
  for (let i = 0; i < nodes; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, nodes - i) }, (_, k) => nodeApi.registerNode(registration(i + k))));
    ids.push(...batch.map((n) => n.id));
  }
  let hbErrors = 0;
  const beat = (i: number) => nodeApi.updateHeartbeat(heartbeat(ids[i % ids.length]!, i)).catch(() => void hbErrors++);
  const first = await nodeApi.updateHeartbeat(heartbeat(ids[0]!, 0));
  const intervalSec = first.heartbeatIntervalSec;
  await cpuPerCall(server.pid, ids.length, 32, beat);
  const rssPerNodeBytes = ((await settledRss(server.pid)) - rssBeforeNodes) / nodes;
  const heapWithNodes = await heapAfterGc(server.logFile);
  const heapPerNodeBytes = (heapWithNodes - heapBeforeNodes) / nodes;
  const bare = await startBareHeartbeats(server.url, ids[0]!);
  const bareApi = createClient(NodeService, createGrpcTransport({ baseUrl: bare.url }));
  const bareBeat = (i: number) => bareApi.updateHeartbeat(heartbeat(ids[i % ids.length]!, i)).catch(() => void hbErrors++);
  await bareBeat(0);

  progress("scale: server CPU per heartbeat against per GetVM (5,000 calls each, 32 in flight)");
  const someVm = (await vmApi.listVMs({ pageSize: 1 })).vms[0]!.id;
  const heartbeatCpuUs = await cpuPerCall(server.pid, HEARTBEATS, 32, beat);
  // Every heartbeat is a version of its node in the change history (HEARTBEATS is well under its size).
  const heapPerHeartbeatBytes = ((await heapAfterGc(server.logFile)) - heapWithNodes) / HEARTBEATS;
  const getVmCpuUs = await cpuPerCall(server.pid, 5_000, 32, () => vmApi.getVM({ id: someVm }));
  const idleWindowMs = 5_000;
  const i0 = cpuSeconds(server.pid);
  await sleep(idleWindowMs);
  const idleCpuPercent = ((cpuSeconds(server.pid) - i0) * 100_000) / idleWindowMs;

  // From here on the agents heartbeat as real ones do, spread evenly over the interval.
  let sent = 0;
  let stopped = false;
  let paused = false;
  let toBare = false;
  const spacingMs = (intervalSec * 1000) / nodes;
  const ticker = (async () => {
    const t0 = nowMs();
    for (let k = 0; !stopped; k++) {
      const due = t0 + k * spacingMs;
      const wait = due - nowMs();
      if (wait > 1) await sleep(wait);
      if (paused) continue;
      void beat(k);
      if (toBare) void bareBeat(k);
      sent++;
    }
  })();

  progress(`scale: CreateVM up to ${num(vms)} VMs (at most ${createBudgetMs / 1000} s), agents heartbeating every ${intervalSec} s`);
  const rssBeforeVms = await settledRss(server.pid);
  const created = await createVms(server.url, baselineVms, vms, createBudgetMs);
  const vmsReached = baselineVms + created.made;
  const rssPerVmBytes = ((await settledRss(server.pid)) - rssBeforeVms) / created.made;

  // Steady state, split: windows of one heartbeat interval taking turns, the agents
  // heartbeating in one and paused in the next (no node is silent for more than two
  // intervals, short of the three that make it NOT_READY), so the controllers' periodic
  // resyncs over every VM fall in both kinds alike and the difference is the heartbeats'.
  progress(`scale: server CPU over ${STEADY_WINDOWS} heartbeat intervals taking turns, agents heartbeating / paused (${num(nodes)} agents, ${num(vmsReached)} VMs)`);
  let beatingCpu = 0;
  let beatingMs = 0;
  let beatingSent = 0;
  let pausedCpu = 0;
  let pausedMs = 0;
  let bareBeatingCpu = 0;
  let barePausedCpu = 0;
  toBare = true;
  for (let w = 0; w < STEADY_WINDOWS; w++) {
    paused = w % 2 === 1;
    const c0 = cpuSeconds(server.pid);
    const b0 = cpuSeconds(bare.pid);
    const s0 = sent;
    const w0 = nowMs();
    await sleep(intervalSec * 1000);
    const cpu = cpuSeconds(server.pid) - c0;
    const bareCpu = cpuSeconds(bare.pid) - b0;
    const ms = nowMs() - w0;
    if (paused) {
      pausedCpu += cpu;
      barePausedCpu += bareCpu;
      pausedMs += ms;
    } else {
      beatingCpu += cpu;
      bareBeatingCpu += bareCpu;
      beatingMs += ms;
      beatingSent += sent - s0;
    }
  }
  paused = false;
  toBare = false;
  await bare.stop();
  const steadyCpuPercent = (beatingCpu * 100_000) / beatingMs;
  const steadyPausedCpuPercent = (pausedCpu * 100_000) / pausedMs;
  const steadyHeartbeatsPerSec = (beatingSent / beatingMs) * 1000;
  const bareSteadyCpuPercent = (bareBeatingCpu * 100_000) / beatingMs;
  const bareSteadyPausedCpuPercent = (barePausedCpu * 100_000) / pausedMs;

  progress(`scale: ListVMs pages of 100 and WatchVMs deliveries at ${num(vmsReached)} VMs, agents heartbeating`);
  const failed = (err: unknown): Percentiles => ({ p50Ms: NaN, p99Ms: NaN, samples: 0, error: String(err) });
  const listLarge = await listPages(vmApi, 1_000).catch(failed);
  const watchLarge = await watchDeliveries(vmApi, 50).catch(failed);
  stopped = true;
  await ticker;
  return {
    server,
    result: {
      store: "memory", vms: vmsReached, vmsAsked: vms, baselineVms, nodes, rssIdleBytes, rssPerVmBytes, rssPerNodeBytes, heapPerNodeBytes, heapPerHeartbeatBytes, historyRevisions: HISTORY_REVISIONS, createPerSec: created.perSec, heartbeatCpuUs, getVmCpuUs,
      heartbeatIntervalSec: intervalSec, steadyCpuPercent, steadyPausedCpuPercent, steadyHeartbeatsPerSec, bareSteadyCpuPercent, bareSteadyPausedCpuPercent, idleCpuPercent, listSmall, listLarge, watchSmall, watchLarge, heartbeatErrors: hbErrors,
    },
  };
}

/**
 * bare-h2.ts (CPU 0, as ours) answering every gRPC call with the bytes of our answer to
 * one UpdateHeartbeat of node `id` (it answers `getvm.grpc` from its directory, whatever
 * the path): the floor for a heartbeat, Node waking for a request and nothing of ours.
 */
async function startBareHeartbeats(url: string, id: string): Promise<Server> {
  const session = await connect(url);
  const req = envelope(toBinary(UpdateHeartbeatRequestSchema, create(UpdateHeartbeatRequestSchema, heartbeat(id, 0))));
  const x = await exchange(session, grpcHeaders(UPDATE_HEARTBEAT), req);
  session.close();
  if (x.status !== 200 || grpcStatus(x) !== "0") throw new Error(`UpdateHeartbeat failed on our server: grpc ${grpcStatus(x)}`);
  const dir = mkdtempSync(join(tmpdir(), "quantix-bench-scale-bare-"));
  try {
    writeFileSync(join(dir, "getvm.grpc"), x.body);
    writeFileSync(join(dir, "getvm.proto"), unenvelope(x.body)[0]!);
    // The server reads both files before it reports its port.
    return await startServer("quantix-scale-bare-h2", BARE_H2, [dir], {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type VmApi = ReturnType<typeof createClient<typeof VMService>>;

/** ListVMs pages of 100 in name order, walking the whole list (again from the start) until `samples` pages. */
async function listPages(api: VmApi, samples: number): Promise<Percentiles> {
  const times: number[] = [];
  let token = "";
  while (times.length < samples) {
    const t0 = nowMs();
    const page = await api.listVMs({ projectId: PROJECT, pageSize: 100, pageToken: token }, { timeoutMs: CALL_TIMEOUT_MS });
    times.push(nowMs() - t0);
    if (page.vms.length === 0) throw new Error("ListVMs returned an empty page");
    token = page.nextPageToken;
  }
  return pct(times);
}

/** A WatchVMs stream from the current revision; `updates` UpdateVM calls one at a time, each timed from sending to its delivery. */
async function watchDeliveries(api: VmApi, updates: number): Promise<Percentiles> {
  const list = await api.listVMs({ projectId: PROJECT, pageSize: 1 }, { timeoutMs: CALL_TIMEOUT_MS });
  const vm = list.vms[0]!;
  const abort = new AbortController();
  const stream = api.watchVMs({ projectId: PROJECT, resourceVersion: list.resourceVersion }, { signal: abort.signal })[Symbol.asyncIterator]();
  const times: number[] = [];
  try {
    for (let i = 0; i < updates; i++) {
      const description = `scale bench ${i}`;
      const t0 = nowMs();
      const next = stream.next();
      await api.updateVM({ id: vm.id, description, updateMask: { paths: ["description"] } }, { timeoutMs: CALL_TIMEOUT_MS });
      for (let r = await next; ; r = await stream.next()) {
        if (r.done) throw new Error("WatchVMs ended");
        if (r.value.type !== EventType.SYNCED && r.value.vm?.id === vm.id && r.value.vm.description === description) break;
      }
      times.push(nowMs() - t0);
    }
  } finally {
    abort.abort();
    await stream.return?.().catch(() => undefined);
  }
  return pct(times);
}

const registration = (i: number) => ({
  hostname: hostname(i),
  managementIp: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  labels: { rack: `r${i % 40}`, zone: `z${i % 3}` },
  cpuInfo: { model: "Bench CPU", sockets: 2, coresPerSocket: 16, threadsPerCore: 2, logicalCpus: 64, frequencyMhz: 2600, features: ["vmx", "avx2", "aes"] },
  memoryInfo: { totalMib: 262_144n },
  storageDevices: [{ name: "nvme0n1", model: "Bench NVMe", sizeGib: 1_920n, type: "nvme" }],
  networkDevices: [{ name: "eth0", macAddress: `52:54:00:${[(i >> 16) & 255, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}` }],
  hypervisor: { type: "qemu", version: "9.2.0", capabilities: ["console", "live-migration"] },
  agentVersion: "bench",
});

/** What an agent sends: usage that moves with every beat, and its Ready condition. */
const heartbeat = (id: string, k: number) => ({
  id,
  usage: { cpuUsagePercent: (k * 7) % 100, memoryUsedMib: BigInt(65_536 + ((k * 131) % 4096)), loadAverage1m: (k % 50) / 10, loadAverage5m: 2, loadAverage15m: 2, memoryTotalMib: 262_144n },
  conditions: [{ type: "Ready", status: 1, reason: "HypervisorUp", message: "qemu answers" }],
});

/**
 * Restart of a control plane on the embedded store holding `vms` VMs (written straight
 * into its database, 1,000 per transaction, after a first start made the directory),
 * against one holding `baselineVms`: from spawning the process to a ListVMs answered.
 */
export async function restartBench(vms: number, baselineVms: number, progress: (msg: string) => void): Promise<RestartResult> {
  const restartOnce = async (count: number) => {
    const dir = mkdtempSync(join(tmpdir(), "quantix-bench-scale-"));
    const env = { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "embedded", QUANTIX_DATA_DIR: join(dir, "data"), QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info", QUANTIX_SHUTDOWN_GRACE_MS: "2000" };
    try {
      await (await startServer(`quantix-scale-embedded-${count}`, SERVER, [], env)).stop();
      await seedEmbedded(join(dir, "data", "pg"), count);
      const t0 = nowMs();
      const s = await startServer(`quantix-scale-restart-${count}`, SERVER, [], env);
      try {
        const api = createClient(VMService, createGrpcTransport({ baseUrl: s.url }));
        const page = await api.listVMs({ projectId: PROJECT, pageSize: 100 });
        const readyMs = nowMs() - t0;
        if (page.vms.length !== Math.min(100, count)) throw new Error(`the restarted control plane listed ${page.vms.length} VMs`);
        return { readyMs, rss: await settledRss(s.pid) };
      } finally {
        await s.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  progress(`scale: restart on the embedded store with ${num(baselineVms)} VMs`);
  const small = await restartOnce(baselineVms);
  progress(`scale: restart on the embedded store with ${num(vms)} VMs`);
  const large = await restartOnce(vms);
  return { vms, baselineVms, readyMs: large.readyMs, baselineReadyMs: small.readyMs, rssBytes: large.rss, baselineRssBytes: small.rss };
}

/** Writes `count` VMs (as CreateVM makes them) into the embedded database in `dir`, 1,000 per commit. */
async function seedEmbedded(dir: string, count: number): Promise<void> {
  const driver = await PgliteDriver.open(dir);
  await migrate(driver, () => undefined);
  const store = await SqlStore.open(driver, { historyRevisions: 1_000, maxBacklog: 100_000, pollMs: 1000, onError: () => undefined });
  try {
    const now = timestampFromMs(Date.now());
    for (let i = 0; i < count; i += 1_000) {
      const ops: TxOp[] = [];
      for (let k = i; k < Math.min(count, i + 1_000); k++) {
        const vm = create(VirtualMachineSchema, {
          id: crypto.randomUUID(), name: name(k), projectId: PROJECT, spec: { ...SPEC, desiredPowerState: PowerState.STOPPED },
          status: { state: VmStatus_State.STOPPED }, createdAt: now, updatedAt: now, generation: 1n,
        });
        ops.push({ op: "create", kind: VM_KIND as never, object: vm });
      }
      await store.commit(ops);
    }
  } finally {
    await store.close();
  }
}

const num = (v: number) => v.toLocaleString("en-US");

/**
 * Idle RSS of `npm start`'s control plane (demo data) on the embedded store in a new directory, and on the memory store:
 * built by `npm run prestart` and started with `npm start`'s own command (package.json, through npmStartArgs).
 */
export async function footprintBench(): Promise<{ embeddedBytes: number; memoryBytes: number; embeddedPeakBytes: number }> {
  const built = spawnSync("npm", ["run", "-s", "prestart"], { cwd: ROOT, stdio: "inherit" });
  if (built.status !== 0) throw new Error(`npm run prestart failed (${built.status ?? built.signal})`);
  const start = npmStartArgs();
  const dir = mkdtempSync(join(tmpdir(), "quantix-bench-footprint-"));
  const env = { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_DEMO: "1", QUANTIX_LOG_LEVEL: "info" };
  try {
    const embedded = await startNode("quantix-footprint-embedded", start, { ...env, QUANTIX_STORE: "embedded", QUANTIX_DATA_DIR: join(dir, "data") });
    const embeddedBytes = await settledRss(embedded.pid);
    const embeddedPeakBytes = peakRss(embedded.pid);
    await embedded.stop();
    const memory = await startNode("quantix-footprint-memory", start, { ...env, QUANTIX_STORE: "memory" });
    const memoryBytes = await settledRss(memory.pid);
    await memory.stop();
    return { embeddedBytes, memoryBytes, embeddedPeakBytes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The most resident memory a process has had (VmHWM). */
function peakRss(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}
