import { spawn } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VmService, VmState, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { migrateConfig } from "./agent-migrate.js";
import { buildQemuArgs, vmPaths, QmpClient } from "@quantix/agent";
import { buildTestGuest } from "@quantix/testing";
import { LOG_DIR, startServer } from "./proc.js";
import { median, nowMs, withTimeout } from "./stats.js";

/** Boot times of one side, in ms, in the order measured. */
export interface BootTimes {
  readonly samplesMs: number[];
  readonly medianMs: number;
}

/** The agent's BootVm against QEMU started and `cont`-ed directly, measured in turns. */
export interface AgentBootResult {
  readonly agent: BootTimes;
  readonly direct: BootTimes;
  readonly runs: number;
}

const QEMU = "qemu-system-x86_64";
const START_TIMEOUT_MS = 30_000;

/** The test guest as a vmm.v1 config: 1 vCPU, `mib` of memory (128 MiB unless said), serial console buffered. */
export async function guestConfig(mib = 128n): Promise<VmConfig> {
  return migrateConfig(await buildTestGuest(), mib);
}

/**
 * The baseline: the command line the agent's QEMU backend builds for the same config,
 * started by the bench itself on the agent's core (CPU 0), then QMP connect, `cont`, and
 * `query-status` until QEMU reports running. Returns the time that took and a stop().
 */
export async function bootDirect(config: VmConfig, stateDir: string, run: number): Promise<{ ms: number; stop: () => Promise<void> }> {
  const paths = vmPaths(stateDir, `direct-${run}`);
  rmSync(paths.dir, { recursive: true, force: true });
  mkdirSync(paths.dir, { recursive: true });
  // As the agent: no cloud-init seed for a config without cloud_init (vmPaths names where one would be).
  const args = buildQemuArgs({ vmId: `direct-${run}`, config, kvm: false, ...paths, seedFile: undefined, disks: [] });
  const log = openSync(paths.logFile, "a");
  const t0 = nowMs();
  const child = spawn("taskset", ["-c", "0", QEMU, ...args], { stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: START_TIMEOUT_MS });
  await qmp.execute("cont");
  for (;;) {
    const status = await qmp.execute<{ running: boolean }>("query-status");
    if (status.running) break;
  }
  const ms = nowMs() - t0;
  return {
    ms,
    stop: async () => {
      await qmp.execute("quit").catch(() => undefined);
      await withTimeout(exited, 10_000, "QEMU to quit").catch(() => child.kill("SIGKILL"));
      qmp.close();
    },
  };
}

/**
 * Measures BootVm through a real agent (QEMU backend, TCG) against the baseline above,
 * `runs` times each in turns after one untimed warm-up of each, so drift hits both alike.
 * The agent holds the VM's QMP socket (QEMU serves one client), so its side ends when
 * BootVm answers: the agent answers after QEMU's `cont` succeeded, and the bench then
 * checks that GetVmInfo says RUNNING.
 */
export async function agentBoot(runs: number, progress: (msg: string) => void): Promise<AgentBootResult> {
  const config = await guestConfig();
  // Short: QEMU's unix socket paths must fit in 107 bytes.
  const dir = mkdtempSync("/tmp/qx-bench-agent-");
  const agent = await startServer("agent-qemu", "packages/agent/src/main.ts", [], {
    VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false", VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "agent"),
    VMCP_IMAGE_DIRS: (await buildTestGuest()).imageDir,
  });
  const client = createClient(VmService, createGrpcTransport({ baseUrl: agent.url }));
  const direct: number[] = [];
  const viaAgent: number[] = [];
  try {
    await client.createVm({ vmId: "bench-boot", config });
    const viaAgentOnce = async (): Promise<number> => {
      const t0 = nowMs();
      const booted = await client.bootVm({ vmId: "bench-boot" });
      const ms = nowMs() - t0;
      const info = await client.getVmInfo({ vmId: "bench-boot" });
      if (booted.state !== VmState.RUNNING || info.state !== VmState.RUNNING) {
        throw new Error(`BootVm answered ${VmState[booted.state]} and GetVmInfo says ${VmState[info.state]}; see ${LOG_DIR}`);
      }
      await client.shutdownVm({ vmId: "bench-boot", force: true });
      return ms;
    };
    const r = await bootsInTurns(runs, config, join(dir, "direct"), viaAgentOnce, "agent", progress);
    viaAgent.push(...r.ours.samplesMs);
    direct.push(...r.direct.samplesMs);
    await client.deleteVm({ vmId: "bench-boot", force: true });
  } finally {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return { agent: { samplesMs: viaAgent, medianMs: median(viaAgent) }, direct: { samplesMs: direct, medianMs: median(direct) }, runs };
}

/**
 * `ours` (one timed boot, torn down after) against the direct baseline, `runs` times each
 * in turns after one untimed warm-up of each (page cache, JIT, first-spawn costs). Who
 * goes first alternates, so neither side always follows the other's teardown.
 */
export async function bootsInTurns(
  runs: number,
  config: VmConfig,
  directDir: string,
  ours: () => Promise<number>,
  label: string,
  progress: (msg: string) => void,
): Promise<{ ours: BootTimes; direct: BootTimes }> {
  const directOnce = async (i: number): Promise<number> => {
    const d = await bootDirect(config, directDir, i);
    await d.stop();
    return d.ms;
  };
  const oursMs: number[] = [];
  const directMs: number[] = [];
  for (let i = 0; i <= runs; i++) {
    let o: number;
    let d: number;
    if (i % 2 === 0) {
      o = await ours();
      d = await directOnce(i);
    } else {
      d = await directOnce(i);
      o = await ours();
    }
    if (i === 0) continue;
    oursMs.push(o);
    directMs.push(d);
    progress(`  run ${i}/${runs}: ${label} ${o.toFixed(1)} ms, direct ${d.toFixed(1)} ms`);
  }
  return { ours: { samplesMs: oursMs, medianMs: median(oursMs) }, direct: { samplesMs: directMs, medianMs: median(directMs) } };
}
