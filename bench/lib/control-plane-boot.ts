import { spawnSync } from "node:child_process";
import type { ClientHttp2Session } from "node:http2";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VirtualMachineSchema, VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { GetVMRequestSchema, StartVMRequestSchema, VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildTestGuest } from "@quantix/testing";
import { envelope, unenvelope } from "./grpc-frame.js";
import { connect, exchange, grpcHeaders, grpcStatus } from "./h2-client.js";
import { bootsInTurns, guestConfig, type BootTimes } from "./agent-boot.js";
import { ROOT, runMs, startServer, type Server } from "./proc.js";
import { median, nowMs, sleep } from "./stats.js";

/** StartVM through the control plane against QEMU started and `cont`-ed directly. */
export interface ControlPlaneBootResult {
  readonly controlPlane: BootTimes;
  readonly direct: BootTimes;
  readonly runs: number;
  /**
   * CPU time the control plane's and the agent's threads ran during each timed StartVM
   * (median of the runs; proc.ts runMs). Most of it is on StartVM's path: the two work in
   * turn, before QEMU's spawn and after its `cont` (QEMU moved to CPU 1 by a wrapper did
   * not shorten StartVM, 2026-12-06: sharing CPU 0 with it is not what costs).
   */
  readonly cpuMs: { readonly controlPlane: number; readonly agent: number; readonly both: number };
  /** What a pause costs the work after it (IdlePenalty). */
  readonly idle: IdlePenalty;
}

/**
 * CPU per call of the same work back to back and after a pause of PAUSE_MS: GetVM on the
 * control plane (the stopped VM of the StartVM runs), and a fixed JavaScript loop in a
 * process of its own (idle-loop.mjs) that shows the machine's part. A StartVM is such
 * work: the control plane and the agent run in pieces, each after a pause (the other's
 * turn, QEMU's start).
 */
export interface IdlePenalty {
  readonly pauseMs: number;
  readonly getVm: { readonly backToBackUs: number; readonly pausedUs: number };
  readonly loop: { readonly backToBackUs: number; readonly pausedUs: number };
}

const PAUSE_MS = 50;
const IDLE_CALLS = 40;

/**
 * The whole path a user takes: VMService.StartVM on a control plane (memory store, so the
 * store's disk is not what is measured), which reconciles the VM onto a real agent's QEMU
 * and answers once it has observed RUNNING. Measured in turns with the direct baseline.
 */
export async function controlPlaneBoot(runs: number, progress: (msg: string) => void): Promise<ControlPlaneBootResult> {
  // The control plane's smallest VM is 256 MiB (VM_LIMITS.memoryMinMib): the direct baseline
  // starts the same size, so both start the same QEMU (it was 128 MiB against our 256).
  const config = await guestConfig(256n);
  const dir = mkdtempSync("/tmp/qx-bench-cp-");
  const r = await rig(dir, { VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false" });
  const cpu: { cp: number; agent: number }[] = [];
  let turns: Awaited<ReturnType<typeof bootsInTurns>>;
  let idle: IdlePenalty;
  try {
    const viaCpOnce = async (): Promise<number> => {
      const s = await r.startAndStop();
      cpu.push(s.cpu);
      return s.ms;
    };
    turns = await bootsInTurns(runs, config, join(dir, "direct"), viaCpOnce, "control plane", progress);
    idle = { pauseMs: PAUSE_MS, getVm: await getVmCpu(r.cp.pid, r.session, r.vmId), loop: loopCpu() };
  } finally {
    await r.close();
    rmSync(dir, { recursive: true, force: true });
  }
  // The first call is bootsInTurns' untimed warm-up.
  const timed = cpu.slice(1);
  const cpuMs = { controlPlane: median(timed.map((c) => c.cp)), agent: median(timed.map((c) => c.agent)), both: median(timed.map((c) => c.cp + c.agent)) };
  return { controlPlane: turns.ours, direct: turns.direct, runs, cpuMs, idle };
}

/** StartVM with a simulated agent (no QEMU): our path alone, warm and after pauses. */
export interface SimulatedStartResult {
  readonly runs: number;
  /** The simulated boot and the pause before each start of the paused case, ms. */
  readonly pauseMs: number;
  /** Starts back to back, the simulated boot 0 ms: StartVM's latency and the control plane's + agent's CPU per start (medians). */
  readonly backToBack: { readonly latencyMs: number; readonly cpuMs: number };
  /** Each start after a pause of pauseMs, with a boot of pauseMs (as QEMU's start pauses both): latency beyond the boot, and CPU. */
  readonly paused: { readonly latencyMs: number; readonly cpuMs: number };
}

/**
 * What our StartVM path costs with no QEMU: a control plane and an agent on the simulated
 * backend (VMCP_SIM_BOOT_MS), the same timed call as controlPlaneBoot's. Once with starts
 * back to back and a boot of 0 ms (the path warm), once with a pause before each start and
 * a boot of that length (the control plane and the agent idle while it boots, as while
 * QEMU starts). The difference is what pauses cost the same work.
 */
export async function simulatedStarts(runs: number, progress: (msg: string) => void): Promise<SimulatedStartResult> {
  const once = async (bootMs: number, pauseMs: number) => {
    const dir = mkdtempSync("/tmp/qx-bench-sim-");
    const r = await rig(dir, { VMCP_BACKEND: "simulated", VMCP_SIM_BOOT_MS: String(bootMs) });
    const latency: number[] = [];
    const cpu: number[] = [];
    try {
      for (let i = 0; i <= runs; i++) {
        if (pauseMs > 0) await sleep(pauseMs);
        const s = await r.startAndStop();
        if (i === 0) continue;
        latency.push(s.ms - bootMs);
        cpu.push(s.cpu.cp + s.cpu.agent);
      }
    } finally {
      await r.close();
      rmSync(dir, { recursive: true, force: true });
    }
    progress(`  simulated boot ${bootMs} ms, pause ${pauseMs} ms: StartVM beyond the boot ${median(latency).toFixed(2)} ms, CPU ${median(cpu).toFixed(2)} ms a start`);
    return { latencyMs: median(latency), cpuMs: median(cpu) };
  };
  return { runs, pauseMs: SIM_PAUSE_MS, backToBack: await once(0, 0), paused: await once(SIM_PAUSE_MS, SIM_PAUSE_MS) };
}

/** The simulated start's boot and pause: about QEMU's start here. */
const SIM_PAUSE_MS = 40;

/** A control plane with one agent, registered as a READY node, and a stopped VM on it. */
interface Rig {
  readonly cp: Server;
  readonly session: ClientHttp2Session;
  readonly vmId: string;
  /**
   * One timed StartVM (its ms, and the CPU the control plane and the agent ran meanwhile),
   * checked (RUNNING in the answer and on the agent), then StopVM.
   */
  startAndStop(): Promise<{ ms: number; cpu: { cp: number; agent: number } }>;
  close(): Promise<void>;
}

async function rig(dir: string, backend: Record<string, string>): Promise<Rig> {
  const guest = await buildTestGuest();
  const cp = await startServer("cp-boot", "packages/server/src/main.ts", [], { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" });
  const agent = await startServer("agent-cp", "packages/agent/src/main.ts", [], {
    ...backend, VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "agent"), VMCP_IMAGE_DIRS: guest.imageDir, QUANTIX_CONTROL_PLANE: cp.url, QUANTIX_NODE_NAME: "bench-agent",
  });
  try {
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
    const nodes = createClient(NodeService, createGrpcTransport({ baseUrl: cp.url }));
    const agentApi = createClient(VmService, createGrpcTransport({ baseUrl: agent.url }));
    let nodeId = "";
    for (const deadline = nowMs() + 30_000; !nodeId; await sleep(100)) {
      if (nowMs() > deadline) throw new Error("the agent did not register as a READY node within 30 s");
      nodeId = (await nodes.listNodes({})).nodes.find((n) => n.hostname === "bench-agent" && n.status?.phase === NodeStatus_Phase.READY)?.id ?? "";
    }
    const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } } };
    const vmId = (await vms.createVM({ name: "bench-start", spec, nodeId })).id;
    // The timed StartVM is one pre-encoded gRPC call on a plain HTTP/2 session, as the creates
    // and h2load rows send theirs: connect-node's client added 0.3-0.5 ms of its own per call
    // (measured on GetVM, 2026-12-06), which is the client's cost, not the control plane's.
    const session = await connect(cp.url);
    const startBody = envelope(toBinary(StartVMRequestSchema, create(StartVMRequestSchema, { id: vmId })));
    const startHeaders = { ...grpcHeaders("/Quantixkvm.compute.v1.VMService/StartVM"), "grpc-timeout": "60000m" };
    return {
      cp,
      session,
      vmId,
      async startAndStop() {
        const cp0 = runMs(cp.pid);
        const agent0 = runMs(agent.pid);
        const t0 = nowMs();
        const x = await exchange(session, startHeaders, startBody);
        const ms = nowMs() - t0;
        const cpu = { cp: runMs(cp.pid) - cp0, agent: runMs(agent.pid) - agent0 };
        if (grpcStatus(x) !== "0") throw new Error(`StartVM failed: grpc-status ${grpcStatus(x)} ${decodeURIComponent(String(x.trailers["grpc-message"] ?? x.headers["grpc-message"] ?? ""))}`);
        const started = fromBinary(VirtualMachineSchema, unenvelope(x.body)[0]!);
        const info = await agentApi.getVmInfo({ vmId });
        if (started.status?.state !== VmStatus_State.RUNNING || info.state !== VmState.RUNNING) {
          throw new Error(`StartVM answered ${VmStatus_State[started.status?.state ?? 0]} and the agent says ${VmState[info.state]}`);
        }
        await vms.stopVM({ id: vmId, force: true }, { timeoutMs: 60_000 });
        return { ms, cpu };
      },
      async close() {
        session.close();
        await vms.deleteVM({ id: vmId, force: true }).catch(() => undefined);
        await agent.stop();
        await cp.stop();
      },
    };
  } catch (err) {
    await agent.stop();
    await cp.stop();
    throw err;
  }
}

/**
 * The control plane's CPU per GetVM: IDLE_CALLS calls back to back (their total over the
 * count), then IDLE_CALLS each after a pause of PAUSE_MS (median). Each read of the
 * server's CPU waits 2 ms after the answer, for the call's own trailing work (its log line).
 */
async function getVmCpu(pid: number, session: ClientHttp2Session, id: string): Promise<IdlePenalty["getVm"]> {
  const headers = grpcHeaders("/Quantixkvm.compute.v1.VMService/GetVM");
  const body = envelope(toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id })));
  const call = async () => {
    const x = await exchange(session, headers, body);
    if (grpcStatus(x) !== "0") throw new Error(`GetVM failed: grpc-status ${grpcStatus(x)}`);
  };
  for (let i = 0; i < IDLE_CALLS; i++) await call();
  const b0 = runMs(pid);
  for (let i = 0; i < IDLE_CALLS; i++) await call();
  await sleep(2);
  const backToBackUs = ((runMs(pid) - b0) * 1000) / IDLE_CALLS;
  const paused: number[] = [];
  for (let i = 0; i < IDLE_CALLS; i++) {
    await sleep(PAUSE_MS);
    const c0 = runMs(pid);
    await call();
    await sleep(2);
    paused.push((runMs(pid) - c0) * 1000);
  }
  return { backToBackUs, pausedUs: median(paused) };
}

/** idle-loop.mjs on CPU 0, where the servers run. */
function loopCpu(): IdlePenalty["loop"] {
  const r = spawnSync("taskset", ["-c", "0", process.execPath, join(ROOT, "bench", "lib", "idle-loop.mjs"), String(PAUSE_MS), "60"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`idle-loop.mjs failed (${r.status ?? r.signal}): ${r.stderr}`);
  const { backToBackUs, pausedUs } = JSON.parse(r.stdout) as { backToBackUs: number; pausedUs: number };
  return { backToBackUs, pausedUs };
}
