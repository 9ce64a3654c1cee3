import { mkdtempSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { buildTestGuest, GUEST_MARKER } from "@quantix/testing";
import { MAX_DOWNTIME_MS, migrateConfig, migrateDirect, qemu, times, type MigrateTimes } from "./agent-migrate.js";
import { startServer, type Server } from "./proc.js";
import { median, nowMs, sleep } from "./stats.js";

/** VMService.MigrateVM through a control plane against QEMU's own migration over QMP. */
export interface ControlPlaneMigrateResult {
  readonly controlPlane: MigrateTimes;
  readonly direct: MigrateTimes;
  /** The direct migration's wall time plus starting its target QEMU (the work PrepareMigration does), per run. */
  readonly directWithTargetStartMs: readonly number[];
  readonly medianDirectWithTargetStartMs: number;
  readonly runs: number;
}

/**
 * The path a user takes: a control plane (memory store) and two agent processes (TCG)
 * sharing the guest's directory; MigrateVM moves one booted guest back and forth `runs`
 * times (wall time of the RPC, which includes PrepareMigration and the status writes;
 * downtime from the response's statistics), in turns with the same QEMU migration driven
 * over QMP by the bench, after one untimed warm-up of each. The guest has 256 MiB on both
 * sides (the compute API's minimum).
 *
 * The control plane runs on CPU 0 like every server of the bench; the two agents, which
 * stand for two hosts, run on both CPUs: their QEMUs inherit the agents' affinity, and the
 * baseline's QEMUs (spawned by the bench) run on both CPUs. Pinned to CPU 0, the agents'
 * QEMUs (guest vCPU, sender and receiver) shared one core with three Node processes while
 * the baseline's had two: traced, 18 runs each in turns, the target's start took 62 ms
 * instead of 37 and the migration itself 109 ms instead of 72; untraced, 24 runs each in
 * turns, MigrateVM took 191.5 ms instead of 170.0 (the baseline 80.5 and 82.5 ms).
 */
export async function controlPlaneMigrate(runs: number, progress: (msg: string) => void): Promise<ControlPlaneMigrateResult> {
  const guest = await buildTestGuest();
  const config = migrateConfig(guest, 256n);
  const dir = mkdtempSync("/tmp/qx-bench-cpmig-");
  const shared = dirname(dirname(guest.kernelPath));
  const servers: Server[] = [];
  let direct: Awaited<ReturnType<typeof qemu>> | undefined;
  try {
    const cp = await startServer("cp-migrate", "packages/server/src/main.ts", [], { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "0", QUANTIX_LOG_LEVEL: "info" });
    servers.push(cp);
    const names = ["bench-mig-a", "bench-mig-b"];
    for (const n of names) {
      servers.push(await startServer(`agent-${n}`, "packages/agent/src/main.ts", [], {
        VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false", VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, n), VMCP_SHARED_DIRS: shared, QUANTIX_CONTROL_PLANE: cp.url, QUANTIX_NODE_NAME: n,
      }, "0,1"));
    }
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
    const nodes = createClient(NodeService, createGrpcTransport({ baseUrl: cp.url }));
    let ids: string[] = [];
    for (const deadline = nowMs() + 30_000; ids.length < 2; await sleep(100)) {
      if (nowMs() > deadline) throw new Error("the agents did not register as READY nodes within 30 s");
      const ready = (await nodes.listNodes({})).nodes.filter((n) => names.includes(n.hostname) && n.status?.phase === NodeStatus_Phase.READY);
      ids = names.map((h) => ready.find((n) => n.hostname === h)?.id ?? "").filter((id) => id !== "");
    }
    progress("migrate: booting the guest on agent A through the control plane, and directly");
    const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } } };
    const vm = await vms.createVM({ name: "bench-migrate", spec, nodeId: ids[0]!, startOnCreate: true });
    direct = await qemu(config, join(dir, "direct"), "direct-src", []);
    for (const deadline = nowMs() + 60_000; ; await sleep(200)) {
      if (nowMs() > deadline) throw new Error("the guest did not boot through the control plane within 60 s");
      const out = await vms.getConsoleOutput({ vmId: vm.id, tailBytes: 65536 }).catch(() => undefined);
      if (out && new TextDecoder().decode(out.data).includes(GUEST_MARKER)) break;
    }
    const c: [number[], number[]] = [[], []];
    const d: [number[], number[]] = [[], []];
    const withStart: number[] = [];
    for (let i = 0; i <= runs; i++) {
      const t0 = nowMs();
      const res = await vms.migrateVM({ vmId: vm.id, targetNodeId: ids[(i + 1) % 2]!, live: true, maxDowntimeMs: MAX_DOWNTIME_MS }, { timeoutMs: 60_000 });
      const wall = nowMs() - t0;
      const downtime = Number(res.stats?.downtimeMs ?? -1n);
      const r = await migrateDirect(config, join(dir, "direct"), direct, i);
      direct = r.target;
      progress(`migrate run ${i}${i === 0 ? " (warm-up)" : ""}: control plane ${wall.toFixed(0)} ms (downtime ${downtime} ms), direct ${r.wall.toFixed(0)} ms (downtime ${r.downtime} ms) after ${r.targetStartMs.toFixed(0)} ms starting its target`);
      if (i === 0) continue;
      c[0].push(wall), c[1].push(downtime), d[0].push(r.wall), d[1].push(r.downtime), withStart.push(r.wall + r.targetStartMs);
    }
    await vms.deleteVM({ id: vm.id, force: true });
    return { controlPlane: times(...c), direct: times(...d), directWithTargetStartMs: withStart, medianDirectWithTargetStartMs: median(withStart), runs };
  } finally {
    await direct?.stop();
    for (const s of servers.reverse()) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
