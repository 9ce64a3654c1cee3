import { execFile } from "node:child_process";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { QuantixError, nocloudMetaData } from "@quantix/core";
import type { CloudInit } from "@quantix/api/gen/vmm/v1/vm_pb.js";

/**
 * Builds a VM's cloud-init NoCloud seed: an ISO 9660 image with volume label "cidata"
 * holding `user-data`, `meta-data` and, when given, `network-config`, made by Debian's
 * genisoimage. The user's text only ever goes into files; genisoimage's command line
 * holds fixed names, run in a staging directory the agent made.
 */

/** The Debian package and binary that build the seed. */
export const SEED_TOOL = { binary: "genisoimage", debianPackage: "genisoimage" } as const;

const run = promisify(execFile);
const SEED_TIMEOUT_MS = 30_000;

/**
 * Writes the seed of VM `vmId` to `seedFile` (atomically: built beside it, then renamed).
 * FAILED_PRECONDITION naming the package when genisoimage is not installed.
 * `cloudInit` must be validated (validateCloudInit) already.
 */
export async function buildCloudInitSeed(vmId: string, cloudInit: CloudInit, seedFile: string, binary: string = SEED_TOOL.binary): Promise<void> {
  const dir = path.dirname(seedFile);
  const staging = path.join(dir, "cidata.d");
  const tmp = `${seedFile}.tmp`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true, mode: 0o700 });
  try {
    const files: [string, string][] = [["user-data", cloudInit.userData], ["meta-data", nocloudMetaData(vmId, cloudInit.metaData)]];
    if (cloudInit.networkConfig.trim() !== "") files.push(["network-config", cloudInit.networkConfig]);
    for (const [name, text] of files) await writeFile(path.join(staging, name), text, { mode: 0o600 });
    // -rock and -joliet keep the names as written ("user-data", not "USER_DAT.;1").
    await run(binary, ["-quiet", "-output", tmp, "-volid", "cidata", "-joliet", "-rock", "-input-charset", "utf-8", "--", ...files.map(([n]) => n)], { cwd: staging, timeout: SEED_TIMEOUT_MS }).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new QuantixError("failed_precondition", `config.cloud_init needs ${SEED_TOOL.binary} to build the NoCloud seed, which is not installed on this host: install the Debian package ${SEED_TOOL.debianPackage}`);
      }
      const stderr = String((err as { stderr?: unknown }).stderr ?? "").trim().split("\n").slice(-2).join(" / ");
      throw new QuantixError("internal", `building the cloud-init seed failed: ${stderr || String(err)}`);
    });
    await rename(tmp, seedFile);
  } finally {
    await Promise.all([rm(staging, { recursive: true, force: true }), rm(tmp, { force: true })]);
  }
}
