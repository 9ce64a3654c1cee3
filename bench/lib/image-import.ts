import { execFileSync, spawn } from "node:child_process";
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ImportPhase, StoragePoolType, StorageService, VolumeFormat } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { childCpuSeconds, cpuSeconds, startServer } from "./proc.js";
import { median, nowMs } from "./stats.js";

/** The agent's ImportVolume against `curl` + `qemu-img convert` of the same file, in ms. */
export interface ImageImportResult {
  readonly imageMib: number;
  readonly agentMs: number[];
  readonly directMs: number[];
  readonly agentMedianMs: number;
  readonly directMedianMs: number;
  /** Where the agent's time goes, per run, as its progress stream shows it: download (with sha256) until the message carrying the digest, verify (decompression check, inspection, room) until CONVERTING, convert until READY. */
  readonly agentPhases: { readonly downloadMs: number; readonly verifyMs: number; readonly convertMs: number }[];
  /** The baseline split by the downloaded file's mtime: curl's download, then qemu-img convert. */
  readonly directPhases: { readonly curlMs: number; readonly convertMs: number }[];
  /** CPU seconds (user + system) of each run: the agent process with its qemu-img children, and the baseline's shell with curl and qemu-img. On a shared machine these move less than wall time. */
  readonly agentCpuSec: number[];
  readonly directCpuSec: number[];
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
  const agentPhases: ImageImportResult["agentPhases"][number][] = [];
  const directPhases: ImageImportResult["directPhases"][number][] = [];
  const agentCpuSec: number[] = [];
  const directCpuSec: number[] = [];
  try {
    await client.ensurePool({ poolId: POOL, type: StoragePoolType.DIR });
    const viaAgent = async (i: number): Promise<number> => {
      const id = `00000000-0000-4000-b000-${String(i).padStart(12, "0")}`;
      const cpu0 = cpuSeconds(agent.pid);
      const t0 = nowMs();
      let last = ImportPhase.UNSPECIFIED;
      let downloaded = 0;
      let converting = 0;
      for await (const p of client.importVolume({ poolId: POOL, volumeId: id, format: VolumeFormat.QCOW2, url })) {
        last = p.phase;
        if (downloaded === 0 && p.sha256 !== "") downloaded = nowMs();
        if (converting === 0 && p.phase === ImportPhase.CONVERTING) converting = nowMs();
      }
      const end = nowMs();
      const ms = end - t0;
      if (last !== ImportPhase.READY) throw new Error(`ImportVolume ended in ${ImportPhase[last]}`);
      if (i > 0) {
        agentPhases.push({ downloadMs: downloaded - t0, verifyMs: converting - downloaded, convertMs: end - converting });
        agentCpuSec.push(cpuSeconds(agent.pid) - cpu0);
      }
      await client.deleteVolume({ poolId: POOL, volumeId: id });
      return ms;
    };
    const direct = async (i: number): Promise<number> => {
      const dl = join(dir, `dl-${i}.qcow2`);
      const out = join(dir, `out-${i}.qcow2`);
      const cpu0 = childCpuSeconds();
      const t0 = nowMs();
      const wall0 = Date.now();
      await run("taskset", ["-c", "0", "sh", "-c", 'curl -sSf -o "$1" "$2" && qemu-img convert -f qcow2 -O qcow2 "$1" "$3"', "sh", dl, url, out]);
      const ms = nowMs() - t0;
      const curlMs = statSync(dl).mtimeMs - wall0;
      if (i > 0) {
        directPhases.push({ curlMs, convertMs: ms - curlMs });
        directCpuSec.push(childCpuSeconds() - cpu0);
      }
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
      const a = agentPhases.at(-1)!;
      const d = directPhases.at(-1)!;
      progress(
        `image import ${i}/${runs}: agent ${agentMs.at(-1)!.toFixed(0)} ms (download ${a.downloadMs.toFixed(0)}, verify ${a.verifyMs.toFixed(0)}, convert ${a.convertMs.toFixed(0)}; CPU ${agentCpuSec.at(-1)!.toFixed(2)} s), ` +
          `curl + qemu-img ${directMs.at(-1)!.toFixed(0)} ms (curl ${d.curlMs.toFixed(0)}, convert ${d.convertMs.toFixed(0)}; CPU ${directCpuSec.at(-1)!.toFixed(2)} s)`,
      );
    }
  } finally {
    await agent.stop();
    await new Promise((resolve) => web.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  }
  return { imageMib: mib, agentMs, directMs, agentMedianMs: median(agentMs), directMedianMs: median(directMs), agentPhases, directPhases, agentCpuSec, directCpuSec };
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}`))));
  });
}
