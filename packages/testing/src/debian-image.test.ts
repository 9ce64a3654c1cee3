import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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

test("a copy boots through the agent's QEMU backend; cloud-init sets the hostname, writes the file and runs the commands", { timeout: BOOT_MS + 120_000 }, async (t) => {
  // The agent refuses a qcow2 with a backing file (host-files.ts: QEMU would open it by
  // name), so the VM gets a full copy: a volume "from an image, full copy".
  const images = path.join(work, "agent-images");
  await mkdir(images);
  const disk = path.join(images, "root.qcow2");
  await run("qemu-img", ["convert", "-f", "qcow2", "-O", "qcow2", image.path, disk]);
  const backend = new QemuBackend({ stateDir: path.join(work, "agent"), kvm: false, imageDirs: [images] });
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
    t.diagnostic(`agent VM (TCG): boot to the marker in ${seconds} s`);
    assert.match(text, /SYSLINUX/, "booted from the disk's own bootloader");
    assert.ok(text.includes(`quantix-note-${NOTE}`), "write_files ran before runcmd");
  } finally {
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 }).catch(() => {});
    const info = await backend.getVMInfo(vmId).catch(() => undefined);
    if (info?.pid) process.kill(info.pid, "SIGKILL");
    await backend.deleteVM(vmId).catch(() => {});
    await backend.close();
  }
});

test("a linked clone (qcow2 overlay on the image), grown to 3 GiB, boots under QEMU with the backing chain given explicitly; growpart fills the disk", { timeout: BOOT_MS + 120_000 }, async (t) => {
  const overlay = path.join(work, "clone.qcow2");
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", image.path, "-F", "qcow2", overlay, "3G"]);
  const seed = await nocloudSeed(path.join(work, "seed"));
  const serial = path.join(work, "clone-serial.log");
  await writeFile(serial, "");
  // What the agent's storage will need: every layer a -blockdev of its own, the image read-only, no name QEMU resolves itself.
  const blockdev = (o: Record<string, unknown>) => ["-blockdev", JSON.stringify(o)];
  const args = [
    "-accel", "tcg", "-machine", "pc", "-m", "512M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
    "-serial", `file:${serial}`,
    ...blockdev({ driver: "file", "node-name": "base-file", filename: image.path, "read-only": true }),
    ...blockdev({ driver: "qcow2", "node-name": "base", file: "base-file", "read-only": true }),
    ...blockdev({ driver: "file", "node-name": "clone-file", filename: overlay }),
    ...blockdev({ driver: "qcow2", "node-name": "clone", file: "clone-file", backing: "base" }),
    "-device", JSON.stringify({ driver: "virtio-blk-pci", drive: "clone", bootindex: 0 }),
    ...blockdev({ driver: "file", "node-name": "seed-file", filename: seed, "read-only": true }),
    ...blockdev({ driver: "raw", "node-name": "seed", file: "seed-file", "read-only": true }),
    "-device", JSON.stringify({ driver: "virtio-blk-pci", drive: "seed" }),
  ];
  const started = Date.now();
  const qemu: ChildProcess = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  qemu.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  try {
    const text = await until(async () => {
      if (qemu.exitCode !== null) throw new Error(`QEMU exited with ${qemu.exitCode}: ${stderr}`);
      const s = await readFile(serial, "utf8");
      return s.includes(MARKER) && s.includes("quantix-root-mib-") ? s : undefined;
    }, `'${MARKER}' on the clone's serial console`, BOOT_MS, 500);
    t.diagnostic(`linked clone: boot to the marker in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const rootMib = Number(/quantix-root-mib-(\d+)/.exec(text)?.[1]);
    assert.ok(rootMib > 2500, `the root file system was grown to the 3 GiB disk (${rootMib} MiB)`);
  } finally {
    qemu.kill("SIGKILL");
  }
  assert.equal(await sha256(image.path), image.sha256, "the image itself is unchanged");
});

/** A NoCloud seed as the agent builds it (cloud-init-seed.ts): an ISO labelled cidata. */
async function nocloudSeed(dir: string): Promise<string> {
  await mkdir(dir);
  await writeFile(path.join(dir, "user-data"), USER_DATA);
  await writeFile(path.join(dir, "meta-data"), "instance-id: clone-1\nlocal-hostname: clone-1\n");
  const iso = path.join(dir, "..", "seed.iso");
  await run("genisoimage", ["-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock", "--", "user-data", "meta-data"], { cwd: dir });
  return iso;
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
