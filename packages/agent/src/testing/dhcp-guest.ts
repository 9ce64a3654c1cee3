import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { ensureDebianPackages, VIRTIO_NET_MODULES } from "@quantix/testing";

const run = promisify(execFile);

/** The line the DHCP guest prints with the address its lease gave, then it powers off. */
export const DHCP_GUEST_LEASE = "QUANTIX-DHCP-LEASE";

const MODULES = VIRTIO_NET_MODULES;

const INIT = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
${MODULES.map((m) => `insmod /lib/modules/${path.basename(m)}`).join("\n")}
ip link set eth0 up
cat > /udhcpc.sh <<'S'
#!/bin/sh
[ "$1" = bound ] && echo "${DHCP_GUEST_LEASE} ip=$ip mtu=$mtu router=$router dns=$dns"
exit 0
S
chmod +x /udhcpc.sh
udhcpc -i eth0 -n -q -t 20 -T 2 -O mtu -s /udhcpc.sh || echo "${DHCP_GUEST_LEASE} none"
poweroff -f
`;

/**
 * A busybox guest that loads virtio-net, asks for a DHCP lease on eth0 and prints it
 * (ip, MTU, router, DNS) on ttyS0, then powers off. Built once per machine from the same
 * Debian kernel package as the other test guests, cached under os.tmpdir().
 */
export async function buildDhcpGuest(): Promise<{ kernelPath: string; initrdPath: string }> {
  await ensureDebianPackages(["busybox-static", "cpio"]);
  const out = await run("apt-cache", ["depends", "linux-image-amd64"]);
  const pkg = /Depends:\s*(linux-image-[0-9][A-Za-z0-9.+-]*)/.exec(out.stdout)?.[1];
  if (!pkg) throw new Error("cannot find the kernel package linux-image-amd64 depends on");
  const hash = createHash("sha256").update(INIT).digest("hex").slice(0, 12);
  const dir = path.join(os.tmpdir(), `quantix-dhcp-guest-${pkg}-${hash}`);
  const kernelPath = path.join(dir, "vmlinuz");
  const initrdPath = path.join(dir, "initrd.gz");
  if (existsSync(initrdPath)) return { kernelPath, initrdPath };
  const work = await mkdtemp(path.join(os.tmpdir(), "quantix-dhcp-guest-build-"));
  try {
    await chmod(work, 0o777);
    await run("apt-get", ["download", pkg], { cwd: work, maxBuffer: 64 << 20 });
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"))!;
    const x = path.join(work, "x");
    await run("dpkg-deb", ["-x", path.join(work, deb), x], { maxBuffer: 64 << 20 });
    const version = (await readdir(path.join(x, "lib/modules")))[0]!;
    const root = path.join(work, "root");
    for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev"]) await mkdir(path.join(root, d), { recursive: true });
    await mkdir(path.join(root, "lib/modules"), { recursive: true });
    await copyFile("/bin/busybox", path.join(root, "bin/busybox"));
    for (const m of MODULES) await copyFile(path.join(x, "lib/modules", version, m), path.join(root, "lib/modules", path.basename(m)));
    await writeFile(path.join(root, "init"), INIT, { mode: 0o755 });
    await run("sh", ["-c", "find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.gz"], { cwd: root, maxBuffer: 64 << 20 });
    const tmp = `${dir}.partial`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    await copyFile(path.join(x, "boot", `vmlinuz-${version}`), path.join(tmp, "vmlinuz"));
    await copyFile(path.join(work, "initrd.gz"), path.join(tmp, "initrd.gz"));
    await rename(tmp, dir);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { kernelPath, initrdPath };
}
