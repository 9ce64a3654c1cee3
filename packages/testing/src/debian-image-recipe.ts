import { createHash } from "node:crypto";

/**
 * What the journey's Debian cloud image is made of, as data: the builder
 * (debian-image.ts) follows it and the cache is keyed by its hash, so a change here is a
 * new image, built once per machine.
 */

/** The root filesystem's label: the kernel command line and fstab find the root by it, whatever the disk bus. */
export const ROOT_LABEL = "quantix-root";

/** The kernel command line extlinux boots with: everything on the serial console. */
export const KERNEL_ARGS = `root=LABEL=${ROOT_LABEL} ro console=ttyS0,115200n8 panic=-1`;

/** The recipe: Debian suite, mirrors, packages, files and masked units. */
export const DEBIAN_IMAGE_RECIPE = {
  /** Bumped when the build steps change in a way the data below does not show. */
  version: 1,
  suite: "bookworm",
  /** Sources lines for mmdebstrap (what /etc/apt/sources.list.d on these machines points at). */
  mirrors: ["deb http://deb.debian.org/debian bookworm main", "deb http://deb.debian.org/debian-security bookworm-security main"],
  /**
   * On top of the minbase variant (Essential and apt): the cloud kernel (virtio drivers,
   * no hardware ones), udev and an initramfs that find the root by label, systemd as
   * init, cloud-init, and growpart for cloud-init's growpart module. No network stack:
   * cloud-init's network step is disabled (the journey reads the serial console).
   */
  packages: ["linux-image-cloud-amd64", "initramfs-tools", "udev", "systemd-sysv", "e2fsprogs", "cloud-init", "cloud-guest-utils"],
  /** The virtual size of the disk (the root partition fills it; cloud-init's growpart grows it with the volume). */
  diskMib: 2048,
  /** Timers and services a test VM never needs and that cost boot time under TCG. */
  masked: [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
  ],
  /** Files written into the root filesystem (path below the root, content). */
  files: {
    "etc/fstab": `LABEL=${ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n`,
    "etc/hostname": "debian\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "",
    // Empty: every VM gets a machine id of its own at boot. Not "uninitialized", whose
    // first-boot semantics run `systemctl preset-all` (4 s under TCG).
    "etc/machine-id": "",
    // Nested virtualization and CPU frequency drivers mean nothing in a test VM; udev loading them costs seconds under TCG.
    "etc/modprobe.d/quantix-blacklist.conf": "blacklist kvm_amd\nblacklist kvm_intel\nblacklist kvm\nblacklist powernow_k8\n",
    "etc/systemd/journald.conf.d/quantix.conf": "[Journal]\nStorage=volatile\n",
    "etc/cloud/cloud.cfg.d/90-quantix.cfg": [
      "# The Quantix test image: NoCloud seeds only, and only the modules the journey uses.",
      "datasource_list: [ NoCloud, None ]",
      "network: {config: disabled}",
      "cloud_init_modules: [seed_random, bootcmd, write_files, growpart, resizefs, set_hostname, update_hostname, update_etc_hosts, users_groups]",
      "cloud_config_modules: [runcmd]",
      "cloud_final_modules: [scripts_per_once, scripts_per_boot, scripts_per_instance, scripts_user, final_message]",
      "",
    ].join("\n"),
  } as Readonly<Record<string, string>>,
} as const;

/** The extlinux configuration for kernel release `release` (e.g. 6.1.0-28-cloud-amd64). */
export function extlinuxConfig(release: string): string {
  return [
    "DEFAULT debian",
    "TIMEOUT 0",
    "PROMPT 0",
    "SERIAL 0 115200",
    "LABEL debian",
    `  LINUX /boot/vmlinuz-${release}`,
    `  INITRD /boot/initrd.img-${release}`,
    `  APPEND ${KERNEL_ARGS}`,
    "",
  ].join("\n");
}

/** The cache key: a hash of the recipe, the kernel command line and the bootloader configuration. */
export function recipeHash(): string {
  return createHash("sha256").update(JSON.stringify([DEBIAN_IMAGE_RECIPE, KERNEL_ARGS, extlinuxConfig("<release>")])).digest("hex").slice(0, 16);
}
