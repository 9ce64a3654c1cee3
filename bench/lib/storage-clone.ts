import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CloneMode, StoragePoolType, StorageService, VolumeFormat } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { startServer } from "./proc.js";
import { median, nowMs } from "./stats.js";

const run = promisify(execFile);

/** Times of one side, in ms, in the order measured. */
export interface CloneTimes {
  readonly samplesMs: number[];
  readonly medianMs: number;
}

/** The agent's linked clone (CreateVolume, CLONE_MODE_LINKED) against a bare `qemu-img create -b`. */
export interface StorageCloneResult {
  readonly agent: CloneTimes;
  readonly direct: CloneTimes;
  readonly runs: number;
  readonly baseSizeBytes: number;
}

/**
 * A volume from an image, as a linked clone: the agent's vmm.v1.StorageService
 * CreateVolume{source: {volume_id, mode: LINKED}} over gRPC (h2c, a real agent process
 * on CPU 0), which checks the ids, takes the volume locks, checks the pool's room,
 * inspects the backing file and writes through a temporary name, against the bare
 * command it runs in the end, `qemu-img create -f qcow2 -b <base> -F qcow2 <overlay>`,
 * started by the bench on CPU 0, on the same file system. `runs` each, in turns, after
 * one untimed warm-up of each.
 */
export async function storageClone(runs: number, progress: (msg: string) => void): Promise<StorageCloneResult> {
  const dir = mkdtempSync("/tmp/qx-bench-clone-");
  const baseSizeBytes = 1 << 30;
  const agent = await startServer("agent-storage", "packages/agent/src/main.ts", [], {
    VMCP_BACKEND: "simulated", VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "agent"), VMCP_POOL_ROOT: join(dir, "pools"),
  });
  const client = createClient(StorageService, createGrpcTransport({ baseUrl: agent.url }));
  const poolId = randomUUID();
  const baseId = randomUUID();
  const directDir = join(dir, "direct");
  mkdirSync(directDir, { recursive: true });
  try {
    await client.ensurePool({ poolId, type: StoragePoolType.DIR });
    const base = await client.createVolume({ poolId, volumeId: baseId, format: VolumeFormat.QCOW2, sizeBytes: BigInt(baseSizeBytes) });
    const directBase = join(directDir, "base.qcow2");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", directBase, String(baseSizeBytes)]);
    const viaAgent = async (): Promise<number> => {
      const id = randomUUID();
      const t0 = nowMs();
      const v = await client.createVolume({ poolId, volumeId: id, format: VolumeFormat.QCOW2, sizeBytes: 0n, source: { volumeId: baseId, mode: CloneMode.LINKED } });
      const ms = nowMs() - t0;
      if (v.backingVolumeId !== base.volumeId) throw new Error(`the agent's clone has backing volume '${v.backingVolumeId}', not '${base.volumeId}'`);
      await client.deleteVolume({ poolId, volumeId: id, force: false });
      return ms;
    };
    const direct = async (i: number): Promise<number> => {
      const overlay = join(directDir, `overlay-${i}.qcow2`);
      const t0 = nowMs();
      await run("taskset", ["-c", "0", "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay]);
      const ms = nowMs() - t0;
      rmSync(overlay);
      return ms;
    };
    const agentMs: number[] = [];
    const directMs: number[] = [];
    for (let i = 0; i <= runs; i++) {
      const [a, d] = i % 2 === 0 ? [await viaAgent(), await direct(i)] : await direct(i).then(async (d0) => [await viaAgent(), d0] as const);
      if (i === 0) continue;
      agentMs.push(a);
      directMs.push(d);
      if (i % 10 === 0) progress(`  run ${i}/${runs}: agent ${a.toFixed(1)} ms, qemu-img ${d.toFixed(1)} ms`);
    }
    await client.deleteVolume({ poolId, volumeId: baseId, force: false });
    await client.deletePool({ poolId });
    return { agent: { samplesMs: agentMs, medianMs: median(agentMs) }, direct: { samplesMs: directMs, medianMs: median(directMs) }, runs, baseSizeBytes };
  } finally {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
