import { spawn } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VmConfigSchema, VmService, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildQemuArgs, vmPaths, QmpClient } from "@quantix/agent";
import { buildTestGuest, GUEST_MARKER, type TestGuest } from "@quantix/testing";
import { startServer, type Server } from "./proc.js";
import { median, nowMs, withTimeout } from "./stats.js";

/** One side's migrations: wall time seen by the caller and QEMU's own downtime, in ms. */
export interface MigrateTimes {
  readonly wallMs: number[];
  readonly downtimeMs: number[];
  readonly medianWallMs: number;
  readonly medianDowntimeMs: number;
}

/** MigrateVm through two agents against the same migration driven over QMP by the bench. */
export interface AgentMigrateResult {
  readonly agent: MigrateTimes;
  readonly direct: MigrateTimes;
  readonly runs: number;
}

/** The downtime limit every migration of the bench asks for. */
export const MAX_DOWNTIME_MS = 300;
/** Samples and their medians. */
export const times = (wallMs: number[], downtimeMs: number[]): MigrateTimes => ({ wallMs, downtimeMs, medianWallMs: median(wallMs), medianDowntimeMs: median(downtimeMs) });

/** One QEMU the bench runs itself, from the agent's own command line for the config. */
export async function qemu(config: VmConfig, dir: string, name: string, extra: string[]): Promise<{ qmp: QmpClient; stop: () => Promise<void> }> {
  const paths = vmPaths(dir, name);
  rmSync(paths.dir, { recursive: true, force: true });
  mkdirSync(paths.dir, { recursive: true });
  const log = openSync(paths.logFile, "a");
  const child = spawn("qemu-system-x86_64", [...buildQemuArgs({ vmId: name, config, kvm: false, ...paths, seedFile: undefined, disks: [] }), ...extra], { stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 30_000 });
  await qmp.execute("cont");
  return {
    qmp,
    stop: async () => {
      await qmp.execute("quit").catch(() => undefined);
      await withTimeout(exited, 10_000, "QEMU to quit").catch(() => child.kill("SIGKILL"));
      qmp.close();
    },
  };
}

/** QEMU's own migration: source -> a fresh `-incoming defer` target, polled every 10 ms. */
export async function migrateDirect(config: VmConfig, dir: string, source: Awaited<ReturnType<typeof qemu>>, run: number) {
  const started = nowMs();
  const target = await qemu(config, dir, `direct-${run}`, ["-incoming", "defer"]);
  await target.qmp.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  const q = await target.qmp.execute<{ "socket-address": { port: string }[] }>("query-migrate");
  const t0 = nowMs();
  /** Starting the target QEMU and making it listen: what PrepareMigration does, outside `wall`. */
  const targetStartMs = t0 - started;
  await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": 1e12, "downtime-limit": MAX_DOWNTIME_MS });
  await source.qmp.execute("migrate", { uri: `tcp:127.0.0.1:${q["socket-address"][0]!.port}` });
  for (;;) {
    const s = await source.qmp.execute<{ status: string; downtime?: number }>("query-migrate");
    if (s.status === "completed") {
      const wall = nowMs() - t0;
      await source.stop();
      return { target, wall, downtime: s.downtime ?? 0, targetStartMs };
    }
    if (s.status === "failed" || s.status === "cancelled") throw new Error(`direct migration ${s.status}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** MigrateVm between two agents, PrepareMigration on the target first; wall time of MigrateVm only. */
async function migrateViaAgents(from: Client<typeof VmService>, to: Client<typeof VmService>, vmId: string, config: VmConfig) {
  const { targetUri } = await to.prepareMigration({ vmId, config });
  const t0 = nowMs();
  let downtime = -1;
  for await (const p of from.migrateVm({ vmId, targetUri, maxDowntimeMs: MAX_DOWNTIME_MS })) if (p.completed) downtime = Number(p.statistics?.downtimeMs ?? 0n);
  return { wall: nowMs() - t0, downtime };
}

/** The test guest's vmm.v1 config with `mib` of memory, as the migrations of the bench run it. */
export function migrateConfig(guest: TestGuest, mib: bigint): VmConfig {
  return create(VmConfigSchema, {
    cpu: { vcpuCount: 1 },
    memory: { sizeBytes: mib * 1024n * 1024n },
    boot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, kernelArgs: guest.kernelArgs },
    console: { enabled: true },
  });
}

/**
 * Two agent processes (TCG) sharing the test guest's directory move one booted guest
 * back and forth `runs` times; the bench does the same with two QEMU processes of the
 * same command line over QMP, in turns after one untimed warm-up of each.
 */
export async function agentMigrate(runs: number, progress: (msg: string) => void): Promise<AgentMigrateResult> {
  const guest = await buildTestGuest();
  const config = migrateConfig(guest, 128n);
  const dir = mkdtempSync("/tmp/qx-bench-mig-");
  const shared = dirname(dirname(guest.kernelPath)); // the guest cache holds kernel and initrd
  const env = (n: string) => ({ VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false", VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, n), VMCP_SHARED_DIRS: shared });
  const agents: Server[] = [];
  let direct: Awaited<ReturnType<typeof qemu>> | undefined;
  try {
    agents.push(await startServer("agent-mig-a", "packages/agent/src/main.ts", [], env("a")), await startServer("agent-mig-b", "packages/agent/src/main.ts", [], env("b")));
    const clients = agents.map((a) => createClient(VmService, createGrpcTransport({ baseUrl: a.url })));
    const vmId = "bench-migrate";
    progress("migrate: booting the guest on agent A and directly");
    await clients[0]!.createVm({ vmId, config });
    await clients[0]!.bootVm({ vmId });
    direct = await qemu(config, join(dir, "direct"), "direct-src", []);
    const deadline = nowMs() + 60_000;
    while (!new TextDecoder().decode((await clients[0]!.getConsoleOutput({ vmId, tailBytes: 65536 })).data).includes(GUEST_MARKER)) {
      if (nowMs() > deadline) throw new Error("the guest did not boot on agent A within 60 s");
      await new Promise((r) => setTimeout(r, 200));
    }
    const a: [number[], number[]] = [[], []];
    const d: [number[], number[]] = [[], []];
    for (let i = 0; i <= runs; i++) {
      const [from, to] = i % 2 === 0 ? [clients[0]!, clients[1]!] : [clients[1]!, clients[0]!];
      const viaAgents = await migrateViaAgents(from, to, vmId, config);
      const r = await migrateDirect(config, join(dir, "direct"), direct, i);
      direct = r.target;
      progress(`migrate run ${i}${i === 0 ? " (warm-up)" : ""}: agents ${viaAgents.wall.toFixed(0)} ms (downtime ${viaAgents.downtime} ms), direct ${r.wall.toFixed(0)} ms (downtime ${r.downtime} ms)`);
      if (i === 0) continue;
      a[0].push(viaAgents.wall), a[1].push(viaAgents.downtime), d[0].push(r.wall), d[1].push(r.downtime);
    }
    await clients[runs % 2 === 0 ? 1 : 0]!.deleteVm({ vmId, force: true });
    return { agent: times(...a), direct: times(...d), runs };
  } finally {
    await direct?.stop();
    await Promise.all(agents.map((s) => s.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}
