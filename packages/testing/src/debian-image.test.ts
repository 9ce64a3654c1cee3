import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { CloudInitSchema, StorageDeviceSchema, VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QemuBackend } from "@quantix/agent";
import { debianCloudImage, type DebianCloudImage } from "./debian-image.js";
import { consoleText } from "./guest-console.js";
import { ensureDebianPackages } from "./guest.js";
import { until } from "./until.js";

// The journey's Debian image (debian-image.ts) boots for real under QEMU (TCG here) from
// its own disk, and cloud-init in it follows a NoCloud seed: the hostname is set and a
// command's output reaches the serial console. Cold, the build takes minutes; then it
// comes from this machine's image cache (`npm run image:debian` builds it ahead).
const run = promisify(execFile);
const BOOT_MS = 6 * 60_000;
const HOSTNAME = "journey-vm";
const MARKER = `quantix-journey-${HOSTNAME}`;
const NOTE = "written-by-cloud-init";
// Plain cloud-config, as a user writes it. runcmd runs in cloud-init's final stage, after
// write_files and the hostname; its output goes straight to the serial port.
const USER_DATA = [
  "#cloud-config",
  `hostname: ${HOSTNAME}`,
  "write_files:",
  "  - path: /etc/quantix-note",
  `    content: ${NOTE}`,
  "runcmd:",
  "  - echo \"quantix-journey-$(hostname)\" > /dev/ttyS0",
  "  - echo \"quantix-note-$(cat /etc/quantix-note)\" > /dev/ttyS0",
  "  - echo \"quantix-root-mib-$(df --output=size -BM / | tail -n 1 | tr -dc 0-9)\" > /dev/ttyS0",
  "",
].join("\n");

let image: DebianCloudImage;
let work: string;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "genisoimage"]);
  const started = Date.now();
  image = await debianCloudImage();
  process.stderr.write(`debian-image.test: image ready in ${Date.now() - started} ms (its build took ${Math.round(image.buildMs / 1000)} s): ${image.path}\n`);
  work = await mkdtemp(path.join(os.tmpdir(), "quantix-debian-image-"));
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test("the image is a compressed qcow2 without a backing file, as recorded", async () => {
  const info = JSON.parse((await run("qemu-img", ["info", "--output=json", "-f", "qcow2", image.path])).stdout) as Record<string, unknown>;
  assert.equal(info["format"], "qcow2");
  assert.equal(info["backing-filename"], undefined);
  assert.equal(info["virtual-size"], image.virtualSizeBytes);
  assert.equal(await sha256(image.path), image.sha256);
  assert.ok(image.sizeBytes < 400 * 1024 * 1024, `the image is ${image.sizeBytes} bytes`);
});

test("a linked clone of the image in a pool, grown to 3 GiB, boots through the agent's QEMU backend; cloud-init sets the hostname, writes the file, runs the commands, and growpart fills the disk", { timeout: BOOT_MS + 120_000 }, async (t) => {
  // A pool as the agent's StorageService lays it out: the image as volume <base>.qcow2, the
  // VM's disk a qcow2 overlay naming it by that bare name with its format (a linked clone).
  // The agent opens the chain itself and gives QEMU each layer (host-files.ts).
  const pool = path.join(work, "pool");
  await mkdir(pool);
  const base = path.join(pool, "8a3c1f8e-7b2d-4c4e-9f0a-1d2e3f4a5b6c.qcow2");
  const disk = path.join(pool, "5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e.qcow2");
  await copyFile(image.path, base);
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", path.basename(base), "-F", "qcow2", disk, "3G"]);
  const backend = new QemuBackend({ stateDir: path.join(work, "agent"), kvm: false, imageDirs: [pool] });
  const vmId = `journey-${process.pid}`;
  try {
    await backend.createVM(vmId, create(VmConfigSchema, {
      cpu: { vcpuCount: 1 },
      memory: { sizeBytes: 512n * 1048576n },
      storage: [create(StorageDeviceSchema, { id: "root", path: disk, isRootDevice: true })],
      cloudInit: create(CloudInitSchema, { userData: USER_DATA }),
    }));
    const started = Date.now();
    await backend.bootVM(vmId);
    const text = await until(async () => {
      const s = await consoleText(backend, vmId);
      return s.includes(MARKER) && s.includes("quantix-root-mib-") ? s : undefined;
    }, `'${MARKER}' on the serial console`, BOOT_MS, 500);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    t.diagnostic(`agent VM on a linked clone (TCG): boot to the marker in ${seconds} s`);
    assert.match(text, /SYSLINUX/, "booted from the disk's own bootloader");
    assert.ok(text.includes(`quantix-note-${NOTE}`), "write_files ran before runcmd");
    const rootMib = Number(/quantix-root-mib-(\d+)/.exec(text)?.[1]);
    assert.ok(rootMib > 2500, `the root file system was grown to the 3 GiB disk (${rootMib} MiB)`);
  } finally {
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 }).catch(() => {});
    const info = await backend.getVMInfo(vmId).catch(() => undefined);
    if (info?.pid) process.kill(info.pid, "SIGKILL");
    await backend.deleteVM(vmId).catch(() => {});
    await backend.close();
  }
  assert.equal(await sha256(base), image.sha256, "the base volume (the image) is unchanged: the guest wrote to its overlay");
});

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
