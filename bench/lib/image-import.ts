import { execFileSync, spawn } from "node:child_process";
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ImportPhase, StoragePoolType, StorageService, VolumeFormat } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { startServer } from "./proc.js";
import { median, nowMs } from "./stats.js";

/** The agent's ImportVolume against `curl` + `qemu-img convert` of the same file, in ms. */
export interface ImageImportResult {
  readonly imageMib: number;
  readonly agentMs: number[];
  readonly directMs: number[];
  readonly agentMedianMs: number;
  readonly directMedianMs: number;
}

const POOL = "00000000-0000-4000-a000-00000000b001";

/**
 * A qcow2 of `mib` MiB of random data served over loopback HTTP (by this process), imported
 * `runs` times each in turns: through a real agent process (on CPU 0) with ImportVolume
 * (download with sha256, format detection, hostile-image inspection, qemu-img convert into
 * a qcow2 volume), and by the baseline on CPU 0: `curl -o` then `qemu-img convert -f
 * qcow2 -O qcow2` of the downloaded file (what an operator would run; qemu-img cannot
 * read a qcow2 from a pipe).
 */
export async function imageImport(mib: number, runs: number, progress: (msg: string) => void): Promise<ImageImportResult> {
  const dir = mkdtempSync("/tmp/qx-bench-image-");
  const raw = join(dir, "src.raw");
  const image = join(dir, "src.qcow2");
  const fd = openSync(raw, "w");
  execFileSync("head", ["-c", String(mib * 1024 * 1024), "/dev/urandom"], { stdio: ["ignore", fd, "inherit"] });
  closeSync(fd);
  execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, image]);
  rmSync(raw);
  const size = statSync(image).size;
  const web = createServer((_req, res) => {
    res.writeHead(200, { "content-length": String(size) });
    createReadStream(image).pipe(res);
  });
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(web.address() as AddressInfo).port}/image.qcow2`;
  const agent = await startServer("agent-storage", "packages/agent/src/main.ts", [], { VMCP_BACKEND: "simulated", VMCP_ADDRESS: "127.0.0.1", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "agent"), VMCP_POOL_ROOT: join(dir, "pools") });
  const client = createClient(StorageService, createGrpcTransport({ baseUrl: agent.url }));
  const agentMs: number[] = [];
  const directMs: number[] = [];
  try {
    await client.ensurePool({ poolId: POOL, type: StoragePoolType.DIR });
    const viaAgent = async (i: number): Promise<number> => {
      const id = `00000000-0000-4000-b000-${String(i).padStart(12, "0")}`;
      const t0 = nowMs();
      let last = ImportPhase.UNSPECIFIED;
      for await (const p of client.importVolume({ poolId: POOL, volumeId: id, format: VolumeFormat.QCOW2, url })) last = p.phase;
      const ms = nowMs() - t0;
      if (last !== ImportPhase.READY) throw new Error(`ImportVolume ended in ${ImportPhase[last]}`);
      await client.deleteVolume({ poolId: POOL, volumeId: id });
      return ms;
    };
    const direct = async (i: number): Promise<number> => {
      const dl = join(dir, `dl-${i}.qcow2`);
      const out = join(dir, `out-${i}.qcow2`);
      const t0 = nowMs();
      await run("taskset", ["-c", "0", "sh", "-c", 'curl -sSf -o "$1" "$2" && qemu-img convert -f qcow2 -O qcow2 "$1" "$3"', "sh", dl, url, out]);
      const ms = nowMs() - t0;
      rmSync(dl);
      rmSync(out);
      return ms;
    };
    // One untimed warm-up of each, then turns, who goes first alternating.
    await viaAgent(0);
    await direct(0);
    for (let i = 1; i <= runs; i++) {
      if (i % 2 === 0) {
        agentMs.push(await viaAgent(i));
        directMs.push(await direct(i));
      } else {
        directMs.push(await direct(i));
        agentMs.push(await viaAgent(i));
      }
      progress(`image import ${i}/${runs}: agent ${agentMs.at(-1)!.toFixed(0)} ms, curl + qemu-img ${directMs.at(-1)!.toFixed(0)} ms`);
    }
  } finally {
    await agent.stop();
    await new Promise((resolve) => web.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  }
  return { imageMib: mib, agentMs, directMs, agentMedianMs: median(agentMs), directMedianMs: median(directMs) };
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}`))));
  });
}
