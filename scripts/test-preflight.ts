// Runs before `npm test` (package.json, through tsx): makes sure every Debian package the tests use is
// installed before any test starts. Test files run in parallel, so installing on demand from
// inside them raced (two apt-get runs, one failing on the dpkg lock; a QEMU test starting
// before another test had installed QEMU), and a fresh machine failed its first run.
//
// As root or with CI=true it installs what is missing, once, with apt-get (running
// `apt-get update` first when the package lists do not know a package it needs); otherwise
// it stops, naming each package and the exact command to run. `--dry-run` prints what it
// would do and changes nothing; `--packages a,b` checks those instead of the tests' list.
import { spawnSync } from "node:child_process";
import { pathToFileURL } from "node:url";

/** The Debian packages the tests use, with what for (shown when one is missing). */
export const TEST_PACKAGES: readonly (readonly [name: string, why: string])[] = [
  ["postgresql", "the PostgreSQL store's tests start a server of their own"],
  ["qemu-system-x86", "the QEMU backend and the end-to-end tests boot real guests"],
  ["qemu-utils", "qemu-img makes the tests' disk images"],
  ["busybox-static", "the test guest's initramfs is busybox"],
  ["cpio", "packs the test guest's initramfs"],
  ["iproute2", "ip makes the QEMU tests' TAP devices"],
  ["nftables", "the network data plane's security groups and anti-spoofing (nft -f)"],
  ["dnsmasq-base", "the network data plane's DHCP and DNS"],
  ["conntrack", "the network data plane cuts connections a removed rule allowed"],
  ["wireguard-go", "routers' WireGuard VPN connections run in user space (no kernel module)"],
  ["wireguard-tools", "wg configures and reads the routers' WireGuard tunnels"],
  ["strongswan-charon", "routers' IPsec VPN connections: the IKE daemon"],
  ["strongswan-swanctl", "loads and lists the routers' IPsec connections (and charon's vici plugin)"],
  ["libcharon-extra-plugins", "charon's kernel-libipsec: ESP in user space (the kernel has no ESP)"],
  ["libstrongswan-standard-plugins", "charon's openssl plugin (ciphers, DH groups)"],
  ["curl", "the README's curl examples run against a test server"],
  ["bsdutils", "script gives the console CLI test a real pseudo-terminal"],
  ["chromium", "the dashboard's tests drive the web dashboard in a real browser (Playwright)"],
  ["zsh", "the CLI's zsh completion script is checked by zsh itself"],
  ["python3", "the MemoryGateway's Python client test runs Debian's interpreter"],
  ["python3-grpcio", "the MemoryGateway's Python client test: a gRPC client nobody here wrote"],
  ["python3-protobuf", "the MemoryGateway's Python client test builds its messages from a descriptor set"],
  ["python3-bson", "the MemoryGateway's Python client test encodes diffs and decodes snapshots (pymongo's bson)"],
  ["genisoimage", "builds cloud-init NoCloud seeds (the agent's tool) and reads them back (isoinfo)"],
  ["xz-utils", "the agent decompresses xz images on import, and the import tests make them"],
  ["zstd", "the agent decompresses zstd images on import, and the import tests make them"],
  // The journey's Debian image (packages/testing/src/debian-image.ts, which installs them too when run alone).
  ["mmdebstrap", "builds the journey's Debian image (a bookworm root file system)"],
  ["e2fsprogs", "mkfs.ext4 makes the Debian image's root file system from the tree"],
  ["fdisk", "sfdisk partitions the Debian image's disk"],
  ["extlinux", "the Debian image's bootloader"],
  ["syslinux-common", "the MBR boot code of the Debian image's disk"],
  ["mount", "losetup and mount, for the moment extlinux is installed"],
];

/** The test guest's kernel is the package this one depends on (`apt-get download`): the package lists must know it. */
export const KERNEL_PACKAGE = "linux-image-amd64";

const INSTALLED = "install ok installed";

/** The packages of `wanted` that `dpkg-query -W -f '${Package}\t${Status}\n'` did not report installed. */
export function missingFrom(dpkgOutput: string, wanted: readonly string[]): string[] {
  const installed = new Set<string>();
  for (const line of dpkgOutput.split("\n")) {
    const [name, status] = line.split("\t");
    if (name && status?.trim() === INSTALLED) installed.add(name.split(":")[0]!);
  }
  return wanted.filter((p) => !installed.has(p));
}

/**
 * What to do. `missing`: packages not installed; `unknown`: names the package lists do not
 * know (an `apt-get update` is due first); `canInstall`: root or CI. Pure, so that it is
 * tested without changing the machine.
 */
export interface Plan {
  readonly kind: "ready" | "install" | "stop";
  /** The commands that install what is missing, in order. */
  readonly commands: readonly (readonly string[])[];
  /** Why the tests cannot start, and the command to run (kind "stop"). */
  readonly message?: string;
}

export function planFor({ missing, unknown, canInstall }: { missing: readonly string[]; unknown: readonly string[]; canInstall: boolean }): Plan {
  if (missing.length === 0 && unknown.length === 0) return { kind: "ready", commands: [] };
  const commands: string[][] = [];
  if (unknown.length > 0) commands.push(["apt-get", "update"]);
  if (missing.length > 0) commands.push(["apt-get", "install", "-y", "--no-install-recommends", ...missing]);
  if (canInstall) return { kind: "install", commands };
  const why = missing.map((p) => `  ${p}: ${TEST_PACKAGES.find(([n]) => n === p)?.[1] ?? "needed by the tests"}`);
  const lists = unknown.filter((p) => !missing.includes(p));
  const lines = [
    missing.length > 0 ? `npm test needs Debian packages that are not installed:\n${why.join("\n")}` : `npm test needs the package lists to know ${lists.join(", ")} (the test guest's kernel is downloaded from them)`,
    `Run this as root, then npm test again:\n  ${commands.map((c) => c.join(" ")).join(" && ")}`,
  ];
  return { kind: "stop", commands, message: lines.join("\n") };
}

function run(cmd: string, args: readonly string[]) {
  return spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
}

/** Which of `names` the package lists know nothing of (`apt-cache show` fails for them). */
function unknownToApt(names: readonly string[]): string[] {
  return names.filter((n) => run("apt-cache", ["show", "--no-all-versions", n]).status !== 0);
}

/** Whether the lists name the versioned kernel package the test guest is built from. */
function listsKnowKernel(): boolean {
  return /Depends:\s*linux-image-[0-9]/.test(run("apt-cache", ["depends", KERNEL_PACKAGE]).stdout ?? "");
}

function main(argv: readonly string[]): number {
  const dryRun = argv.includes("--dry-run");
  const listed = argv.find((a) => a.startsWith("--packages="))?.slice("--packages=".length);
  const wanted = listed ? listed.split(",").filter(Boolean) : TEST_PACKAGES.map(([name]) => name);
  const query = run("dpkg-query", ["-W", "-f=${Package}\t${Status}\n", ...wanted]);
  if (query.error) {
    process.stderr.write(`test preflight: no dpkg-query here, so the Debian packages the tests use cannot be checked (${wanted.join(", ")}); continuing\n`);
    return 0;
  }
  const missing = missingFrom(query.stdout ?? "", wanted);
  const unknown = [...unknownToApt(missing), ...(listed || listsKnowKernel() ? [] : [KERNEL_PACKAGE])];
  const plan = planFor({ missing, unknown, canInstall: process.getuid?.() === 0 || process.env["CI"] === "true" });
  if (plan.kind === "ready") return 0;
  if (dryRun) {
    process.stdout.write(`test preflight (dry run): missing ${missing.join(", ") || "nothing"}; would run:\n${plan.commands.map((c) => `  ${c.join(" ")}`).join("\n")}\n`);
    return 0;
  }
  if (plan.kind === "stop") {
    process.stderr.write(`test preflight: ${plan.message}\n`);
    return 1;
  }
  for (const [cmd = "", ...args] of plan.commands) {
    process.stdout.write(`test preflight: ${cmd} ${args.join(" ")}\n`);
    const r = spawnSync(cmd, args, { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
    if (r.status !== 0) {
      process.stderr.write(`test preflight: '${cmd} ${args.join(" ")}' failed (${r.error?.message ?? `exit ${r.status}`}); no test was started\n`);
      return 1;
    }
  }
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) process.exit(main(process.argv.slice(2)));
