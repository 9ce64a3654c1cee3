import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { NetworkInterfaceSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { until, buildTestGuest, ensureDebianPackages, guestVmConfig, ticksPast, type TestGuest } from "@quantix/testing";
import { isProcessAlive } from "../../process-state.js";
import { QemuBackend } from "./qemu-backend.js";

// QEMU started by the backend with `netns` runs in that network namespace: it opens the
// TAP made there (as the data plane makes ports' TAPs in VMCP_NETWORK_NETNS), and the
// pid the backend records, adopts and kills is QEMU's own.

const NS = `qxa${(process.pid & 0xffff).toString(16)}q`;
const TAP = `${NS}t`;
const BOOT_MS = 60_000;
let guest: TestGuest;
let stateDir: string;

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
/** The link's flags in `ns` (undefined in the root namespace), or undefined when it is not there. */
function linkFlags(name: string, ns?: string): string[] | undefined {
  try {
    const out = JSON.parse(sh(["ip", ...(ns ? ["-n", ns] : []), "-j", "link", "show", "dev", name])) as { flags: string[] }[];
    return out[0]?.flags;
  } catch {
    return undefined;
  }
}

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio", "iproute2"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-qemu-netns-"));
  sh(["ip", "netns", "add", NS]);
  sh(["ip", "-n", NS, "tuntap", "add", "dev", TAP, "mode", "tap"]);
  sh(["ip", "-n", NS, "link", "set", TAP, "up"]);
});

after(async () => {
  try {
    sh(["ip", "netns", "del", NS]);
  } catch {
    // already gone
  }
  await rm(stateDir, { recursive: true, force: true });
});

test("a bad namespace name is refused when the backend is built", () => {
  for (const netns of ["", "a b", "../x", "x".repeat(65), "ns;rm"]) {
    assert.throws(() => new QemuBackend({ stateDir: "/tmp/x", kvm: false, netns }), (e: unknown) => e instanceof QuantixError && e.code === "invalid_argument" && /netns/.test(e.message), netns);
  }
});

test("QEMU with netns runs in the namespace, holds the TAP there, and its pid is QEMU's (recover, kill)", { timeout: 180_000 }, async () => {
  const vmId = `netns-${process.pid}`;
  let backend = new QemuBackend({ stateDir, kvm: false, netns: NS });
  try {
    const config = guestVmConfig(guest, 128, { network: [create(NetworkInterfaceSchema, { id: "nic0", macAddress: "52:54:00:12:34:56", tapDevice: TAP })] });
    await backend.createVM(vmId, config);
    await backend.bootVM(vmId);
    await ticksPast(backend, vmId, 1, "the guest's counter", BOOT_MS);
    const pid = (await backend.getVMInfo(vmId)).pid;
    assert.ok(pid);
    // The recorded pid is QEMU itself (ip execs it in place), in the namespace's network namespace.
    const argv0 = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0")[0];
    assert.match(argv0 ?? "", /qemu-system-x86_64$/);
    const [procNs, named] = await Promise.all([stat(`/proc/${pid}/ns/net`), stat(`/run/netns/${NS}`)]);
    assert.equal(procNs.ino, named.ino, "QEMU's network namespace is the one named");
    assert.notEqual(procNs.ino, (await stat("/proc/self/ns/net")).ino);
    // It opened the TAP in the namespace (carrier), and made none in the root namespace.
    assert.ok(await until(() => (linkFlags(TAP, NS)?.includes("LOWER_UP") ? true : undefined), "carrier on the namespace's TAP", 10_000));
    assert.equal(linkFlags(TAP), undefined, "no TAP of that name in the root namespace");

    // An agent restart re-adopts it by pid (the pid check reads QEMU's command line).
    await backend.close();
    backend = new QemuBackend({ stateDir, kvm: false, netns: NS });
    assert.deepEqual(await backend.recover(), [vmId]);
    const adopted = await backend.getVMInfo(vmId);
    assert.equal(adopted.state, "running");
    assert.equal(adopted.pid, pid);
    await ticksPast(backend, vmId, 0, "the adopted guest's counter", BOOT_MS);

    // A forced stop ends that very process.
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
    assert.equal((await backend.getVMInfo(vmId)).state, "shutdown");
    assert.ok(await until(() => (!isProcessAlive(pid) ? true : undefined), "QEMU gone", 10_000));
    assert.ok(await until(() => (!linkFlags(TAP, NS)?.includes("LOWER_UP") ? true : undefined), "carrier off once QEMU is gone", 10_000));
  } finally {
    await backend.deleteVM(vmId).catch(() => undefined);
    await backend.close();
  }
});
