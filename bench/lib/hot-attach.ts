import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { StorageInterfaceType, VmService, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildQemuArgs, vmPaths, QmpClient } from "@quantix/agent";
import { buildTestGuest, GUEST_TICK } from "@quantix/testing";
import { guestConfig } from "./agent-boot.js";
import { ROOT, startServer } from "./proc.js";
import { median, nowMs, sleep, withTimeout } from "./stats.js";

/** One side's attach + detach cycles, in ms. */
export interface CycleTimes {
  readonly samplesMs: number[];
  readonly medianMs: number;
  /** The attach half (AttachDisk; blockdev-add ×2 + device_add) of each cycle. */
  readonly attachMedianMs: number;
  /** The detach half (DetachDisk; device_del, DEVICE_DELETED, blockdev-del ×2). */
  readonly detachMedianMs: number;
}

/** Hot attach + detach through the agent against the same QMP commands sent by the bench. */
export interface HotAttachResult {
  readonly cycles: number;
  readonly agent: CycleTimes;
  readonly direct: CycleTimes;
  /**
   * Median round trip of the QMP commands the agent sends beyond the baseline's, on the
   * bench's QEMU (10 each): query-blockstats (GetVmInfo's block metrics, read twice per
   * AttachDisk and per DetachDisk: the VM's state before, and the change published after),
   * query-pci (a free slot), query-named-block-nodes (a linked clone's layers to remove).
   */
  readonly qmpRoundTripMs: Record<string, number>;
}

const QEMU = "qemu-system-x86_64";
const BOOT_MS = 120_000;
const UNPLUG_MS = 60_000;
/** The guest prints a counter every second; this many mean its ACPI hot-plug is up (the test guest's kernel has booted). */
const BOOTED_TICKS = 3;

/**
 * `cycles` hot attach + detach cycles of a 64 MiB qcow2 on a running test guest (QEMU, TCG,
 * the guest of `packages/testing/src/guest.ts`: it releases an unplugged device through
 * ACPI, which is what device_del waits for), each side on its own guest, both on CPU 0:
 * - ours: AttachDisk then DetachDisk through a real agent process's vmm.v1 VmService (gRPC,
 *   h2c): validation, the VM's queue, the file and its chain checked against the allow-list,
 *   a free PCI slot looked up, the record saved, the state published; DetachDisk waits
 *   for DEVICE_DELETED before removing the block nodes;
 * - baseline: a QEMU started with the very command line the agent builds for the same
 *   config, driven over QMP by `qmp-cycle-driver.ts`, a process pinned to CPU 0 like the
 *   agent (so a guest's TCG vCPU competes with both clients alike): blockdev-add (file),
 *   blockdev-add (qcow2), device_add (virtio-blk-pci on a slot known to be free), then
 *   device_del, waiting for DEVICE_DELETED, blockdev-del ×2 (a node QEMU still holds right
 *   after the event is deleted again, as the agent does). The driver times each cycle
 *   itself; the agent's cycles are timed here, gRPC included (the agent's API is remote).
 * One untimed warm-up cycle each, then turns, who goes first alternating; medians.
 */
export async function hotAttach(cycles: number, progress: (msg: string) => void): Promise<HotAttachResult> {
  const guest = await buildTestGuest();
  const config = await guestConfig();
  // Short: QEMU's unix socket paths must fit in 107 bytes.
  const dir = mkdtempSync("/tmp/qx-bench-hp-");
  const disks = join(dir, "disks");
  mkdirSync(disks);
  const agentDisk = join(disks, "agent.qcow2");
  const directDisk = join(disks, "direct.qcow2");
  for (const f of [agentDisk, directDisk]) execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", f, "64M"]);
  const agent = await startServer("agent-hotplug", "packages/agent/src/main.ts", [], {
    VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "false", VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "agent"),
    VMCP_IMAGE_DIRS: `${guest.imageDir},${disks}`,
  });
  const client = createClient(VmService, createGrpcTransport({ baseUrl: agent.url }));
  const vmId = "bench-hp";
  let direct: DirectVm | undefined;
  let driver: ChildProcess | undefined;
  const agentMs: number[][] = [];
  const directMs: number[][] = [];
  const qmpRoundTripMs: Record<string, number> = {};
  try {
    await client.createVm({ vmId, config });
    await client.bootVm({ vmId });
    direct = await startDirect(config, join(dir, "direct"));
    await until(async () => ticks(new TextDecoder().decode((await client.getConsoleOutput({ vmId, tailBytes: 1 << 16 })).data)) >= BOOTED_TICKS, "the agent's guest to boot");
    await until(async () => ticks(direct!.console()) >= BOOTED_TICKS, "the bench's guest to boot");
    const slot = await freeSlot(direct.qmp);

    const viaAgent = async (): Promise<number[]> => {
      const t0 = nowMs();
      const a = await client.attachDisk({ vmId, disk: { id: "data", path: agentDisk, interfaceType: StorageInterfaceType.VIRTIO_BLK } });
      const t1 = nowMs();
      const d = await client.detachDisk({ vmId, diskId: "data", timeoutSeconds: UNPLUG_MS / 1000 });
      const t2 = nowMs();
      if (!a.hotPlugged || !d.hotUnplugged) throw new Error(`AttachDisk hotPlugged=${a.hotPlugged}, DetachDisk hotUnplugged=${d.hotUnplugged}`);
      return [t2 - t0, t1 - t0, t2 - t1];
    };
    // The bench's own QMP connection has served its purpose (boot, the free slot, the round
    // trips); the baseline's cycles are driven from a process pinned to CPU 0, as the agent is.
    for (const command of ["query-blockstats", "query-pci", "query-named-block-nodes"]) {
      const samples: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t0 = nowMs();
        await direct.qmp.execute(command, command === "query-named-block-nodes" ? { flat: true } : undefined);
        samples.push(nowMs() - t0);
      }
      qmpRoundTripMs[command] = median(samples);
    }
    direct.qmp.close();
    driver = spawn("taskset", ["-c", "0", process.execPath, "--import", "tsx", "bench/lib/qmp-cycle-driver.ts", direct.qmpSocket, directDisk, String(slot)], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
    const lines = createInterface({ input: driver.stdout! })[Symbol.asyncIterator]();
    const answer = async (): Promise<{ ready?: boolean; ms?: number[] }> => {
      const next = await withTimeout(lines.next(), 120_000, "the QMP driver to answer");
      if (next.done) throw new Error("the QMP driver exited");
      return JSON.parse(next.value) as { ready?: boolean; ms?: number[] };
    };
    if (!(await answer()).ready) throw new Error("the QMP driver did not start");
    const viaQmp = async (): Promise<number[]> => {
      driver!.stdin!.write("cycle\n");
      const { ms } = await answer();
      if (!ms) throw new Error("the QMP driver answered no times");
      return ms;
    };
    for (let i = 0; i <= cycles; i++) {
      let o: number[];
      let d: number[];
      if (i % 2 === 0) {
        o = await viaAgent();
        d = await viaQmp();
      } else {
        d = await viaQmp();
        o = await viaAgent();
      }
      if (i === 0) continue;
      agentMs.push(o);
      directMs.push(d);
      progress(`  cycle ${i}/${cycles}: agent ${o[0]!.toFixed(1)} ms (attach ${o[1]!.toFixed(1)}, detach ${o[2]!.toFixed(1)}), QMP ${d[0]!.toFixed(1)} ms (attach ${d[1]!.toFixed(1)}, detach ${d[2]!.toFixed(1)})`);
    }
    driver.stdin!.end("quit\n");
    await withTimeout(new Promise((resolve) => driver!.once("exit", resolve)), 10_000, "the QMP driver to exit");
    await client.deleteVm({ vmId, force: true });
  } finally {
    driver?.kill("SIGKILL");
    await direct?.stop();
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const times = (s: number[][]): CycleTimes => ({ samplesMs: s.map((x) => x[0]!), medianMs: median(s.map((x) => x[0]!)), attachMedianMs: median(s.map((x) => x[1]!)), detachMedianMs: median(s.map((x) => x[2]!)) });
  return { cycles, agent: times(agentMs), direct: times(directMs), qmpRoundTripMs };
}

interface DirectVm {
  readonly qmp: QmpClient;
  readonly qmpSocket: string;
  console(): string;
  stop(): Promise<void>;
}

/** QEMU with the agent's command line for `config`, started by the bench on CPU 0 and cont-ed; its serial console read from its socket. */
async function startDirect(config: VmConfig, stateDir: string): Promise<DirectVm> {
  const paths = vmPaths(stateDir, "direct-hp");
  mkdirSync(paths.dir, { recursive: true });
  // As the agent: no cloud-init seed for a config without cloud_init (vmPaths names where one would be).
  const args = buildQemuArgs({ vmId: "direct-hp", config, kvm: false, ...paths, seedFile: undefined, disks: [] });
  const log = openSync(paths.logFile, "a");
  const child = spawn("taskset", ["-c", "0", QEMU, ...args], { stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 30_000 });
  let text = "";
  const sock = createConnection(paths.consoleSocket);
  sock.on("data", (d: Buffer) => (text = (text + d.toString("utf8")).slice(-(1 << 16))));
  sock.on("error", () => undefined);
  await qmp.execute("cont");
  return {
    qmp,
    qmpSocket: paths.qmpSocket,
    console: () => text,
    stop: async () => {
      sock.destroy();
      qmp.close();
      // A connection of its own: the bench's first one was handed over to the cycle driver.
      const last = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 10_000 }).catch(() => undefined);
      await last?.execute("quit").catch(() => undefined);
      await withTimeout(exited, 10_000, "QEMU to quit").catch(() => child.kill("SIGKILL"));
      last?.close();
    },
  };
}

const ticks = (text: string): number => Math.max(0, ...[...text.matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1])));

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + BOOT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** The lowest free slot of pci.0 (looked up once, before anything is timed). */
async function freeSlot(qmp: QmpClient): Promise<number> {
  const buses = await qmp.execute<{ bus: number; devices: { slot: number }[] }[]>("query-pci");
  const used = new Set((buses.find((b) => b.bus === 0)?.devices ?? []).map((d) => d.slot));
  for (let s = 2; s <= 31; s++) if (!used.has(s)) return s;
  throw new Error("no free PCI slot");
}
