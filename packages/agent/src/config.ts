import { hostname } from "node:os";
import { join as joinPath, resolve } from "node:path";
import { QuantixError } from "@quantix/core";
import { parseIp4 } from "./network/ipv4.js";
import { NETNS_NAME } from "./network/names.js";
import { parsePhysicalNetworks } from "./network/physical-networks.js";

/** The hypervisor backends an agent can drive. */
export const BACKEND_TYPES = ["qemu", "cloud-hypervisor", "firecracker", "simulated"] as const;
/** One of {@link BACKEND_TYPES}. */
export type BackendType = (typeof BACKEND_TYPES)[number];

/** The agent's validated configuration. */
export interface AgentConfig {
  readonly backend: BackendType;
  /**
   * `unix://<path>.sock`: one Cloud Hypervisor runs per VM, so this names no single
   * socket; VM `id`'s API socket is `<path>-<id>.sock` (see {@link vmSocketPrefix}).
   */
  readonly chEndpoint: string;
  /** Like {@link chEndpoint}, for Firecracker. */
  readonly fcEndpoint: string;
  /** Only `qemu:///system`: the agent runs QEMU itself (one process per VM, no libvirt). */
  readonly qemuEndpoint: string;
  /** The `cloud-hypervisor` binary: a command name on PATH or an absolute path. */
  readonly chBinary: string;
  /** The `firecracker` binary: a command name on PATH or an absolute path. */
  readonly fcBinary: string;
  readonly qemuBinary: string;
  /** Use KVM with QEMU; these machines need false (TCG). */
  readonly qemuKvm: boolean;
  readonly address: string;
  readonly port: number;
  /** Absolute path of the agent's state directory. */
  readonly stateDir: string;
  /** The control plane's base URL, when the agent registers with one. */
  readonly controlPlane: string | undefined;
  readonly nodeName: string;
  /**
   * Directories whose files every other agent reaches at the same paths (VMCP_SHARED_DIRS,
   * comma-separated absolute paths): a VM moves live only if its kernel, initrd and disks
   * lie under one of them. Empty: no VM of this host can migrate.
   */
  readonly sharedDirs: readonly string[];
  /**
   * The image allow-list (VMCP_IMAGE_DIRS, comma-separated absolute paths): a VM's kernel,
   * initrd and disks must resolve (after symlinks) to files below one of these or below a
   * shared directory. Default: `<state dir>/images` and `/var/lib/quantix/images`.
   */
  readonly imageDirs: readonly string[];
  /**
   * Where the agent keeps its storage pools (VMCP_POOL_ROOT, an absolute path): a DIR pool
   * is the directory `<pool root>/<pool id>`, a SHARED_DIR pool a symlink there to its
   * shared directory. Volumes in it are allowed as VM disks. Default: `<state dir>/pools`.
   */
  readonly poolRoot: string;
  /**
   * Whether the agent programs this host's networking and serves vmm.v1 NetworkService
   * (VMCP_NETWORK, "on" or "off"). Off by default: the data plane owns nftables tables and
   * links named `qb…`/`qv…`/`qt…` in its namespace, and two agents in one namespace (a
   * test machine's) would fight over them.
   */
  readonly network: boolean;
  /**
   * The network namespace the data plane programs (VMCP_NETWORK_NETNS, a name under
   * /run/netns); empty: the agent's own, as in production. For hosts simulated as namespaces.
   */
  readonly networkNetns: string | undefined;
  /**
   * This host's VXLAN source address (VMCP_NETWORK_UNDERLAY_ADDRESS, IPv4), reported in
   * GetNetworkCapabilities for the control plane to use. Undefined: the first global-scope
   * IPv4 address of the data plane's namespace, looked up at each probe.
   */
  readonly networkUnderlayAddress: string | undefined;
  /**
   * The physical networks this host reaches, name → host interface in the data plane's
   * namespace (VMCP_NETWORK_PHYSICAL_NETWORKS, "ext=eth1,physnet2=bond0"): what a router's
   * external side names. Empty: none ("network-uplink" is unavailable).
   */
  readonly networkPhysicalNetworks: ReadonlyMap<string, string>;
  /**
   * Enroll with the control plane at this base URL (https) before starting (VMCP_JOIN,
   * --join); it becomes the control plane the agent registers with unless
   * QUANTIX_CONTROL_PLANE says otherwise. Ignored once the state directory holds a certificate.
   */
  readonly join: string | undefined;
  /** The one-time join token (VMCP_JOIN_TOKEN, --join-token): required with join. */
  readonly joinToken: string | undefined;
  /** The cluster CA certificate (PEM file) that verifies the control plane at enrollment (VMCP_CA_CERT, --ca-cert): required with join. */
  readonly caCert: string | undefined;
  /**
   * How long a guest of the simulated backend takes to boot, in ms (VMCP_SIM_BOOT_MS,
   * 0-600000; a graceful shutdown takes half). Other backends ignore it.
   */
  readonly simBootMs: number;
}

/** The one QEMU endpoint the agent accepts (the seed's default): QEMU run by the agent on this host. */
export const QEMU_ENDPOINT = "qemu:///system";

/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
/** The longest simulated boot (10 minutes). */
const MAX_SIM_BOOT_MS = 600_000;
/** The longest VM id (vm-id.ts's VM_ID_PATTERN), for the socket length check. */
const MAX_VM_ID_BYTES = 63;

/**
 * The prefix of the per-VM API sockets an endpoint names: `unix:///tmp/ch.sock` gives
 * `/tmp/ch`, so VM `web-1` gets `/tmp/ch-web-1.sock`. Undefined for a malformed endpoint.
 */
export function vmSocketPrefix(endpoint: string): string | undefined {
  // No commas: Cloud Hypervisor reads `--api-socket path=...` as comma-separated options.
  const m = /^unix:\/\/(\/[^\u0000-\u001f,]*[^/,])\.sock$/.exec(endpoint);
  return m?.[1];
}

/** Why a CH/FC endpoint is unusable, or undefined when it is fine. */
function endpointProblem(endpoint: string): string | undefined {
  const prefix = vmSocketPrefix(endpoint);
  if (prefix === undefined) return `must be unix://<absolute path>.sock (VM sockets are <path>-<vm id>.sock), got '${endpoint}'`;
  const longest = Buffer.byteLength(`${prefix}-${"x".repeat(MAX_VM_ID_BYTES)}.sock`);
  if (longest > MAX_SOCKET_PATH) return `is too long: a VM's socket path would take up to ${longest} bytes, over the ${MAX_SOCKET_PATH}-byte limit of unix sockets; use a shorter directory such as /run/quantix`;
  return undefined;
}

/** The image directories when VMCP_IMAGE_DIRS is unset, as --help and the docs show them. */
const IMAGE_DIRS_DEFAULT = "<state dir>/images,/var/lib/quantix/images";
/** The pool root when VMCP_POOL_ROOT is unset. */
const POOL_ROOT_DEFAULT = "<state dir>/pools";

/** Each setting: its env var, its --flag, and its default (the seed's where it names one). */
const SETTINGS = {
  backend: ["VMCP_BACKEND", "--backend", "qemu"],
  chEndpoint: ["VMCP_CH_ENDPOINT", "--ch-endpoint", "unix:///tmp/ch.sock"],
  fcEndpoint: ["VMCP_FC_ENDPOINT", "--fc-endpoint", "unix:///tmp/firecracker.sock"],
  qemuEndpoint: ["VMCP_QEMU_ENDPOINT", "--qemu-endpoint", QEMU_ENDPOINT],
  chBinary: ["VMCP_CH_BINARY", "--ch-binary", "cloud-hypervisor"],
  fcBinary: ["VMCP_FC_BINARY", "--fc-binary", "firecracker"],
  qemuBinary: ["VMCP_QEMU_BINARY", "--qemu-binary", "qemu-system-x86_64"],
  qemuKvm: ["VMCP_QEMU_KVM", "--qemu-kvm", "true"],
  address: ["VMCP_ADDRESS", "--address", "127.0.0.1"],
  port: ["VMCP_PORT", "--port", "9090"],
  stateDir: ["VMCP_STATE_DIR", "--state-dir", "./.quantix-agent"],
  controlPlane: ["QUANTIX_CONTROL_PLANE", "--control-plane", ""],
  nodeName: ["QUANTIX_NODE_NAME", "--node-name", ""],
  sharedDirs: ["VMCP_SHARED_DIRS", "--shared-dirs", ""],
  imageDirs: ["VMCP_IMAGE_DIRS", "--image-dirs", IMAGE_DIRS_DEFAULT],
  poolRoot: ["VMCP_POOL_ROOT", "--pool-root", POOL_ROOT_DEFAULT],
  network: ["VMCP_NETWORK", "--network", "off"],
  networkNetns: ["VMCP_NETWORK_NETNS", "--network-netns", ""],
  networkUnderlayAddress: ["VMCP_NETWORK_UNDERLAY_ADDRESS", "--network-underlay-address", ""],
  networkPhysicalNetworks: ["VMCP_NETWORK_PHYSICAL_NETWORKS", "--network-physical-networks", ""],
  join: ["VMCP_JOIN", "--join", ""],
  joinToken: ["VMCP_JOIN_TOKEN", "--join-token", ""],
  caCert: ["VMCP_CA_CERT", "--ca-cert", ""],
  simBootMs: ["VMCP_SIM_BOOT_MS", "--sim-boot-ms", "200"],
} as const satisfies Record<keyof AgentConfig, readonly [string, string, string]>;

type Key = keyof typeof SETTINGS;

/** Every setting as [env var, flag, default], for --help and the docs' configuration table. */
export function agentSettings(): readonly (readonly [env: string, flag: string, defaultValue: string])[] {
  return Object.values(SETTINGS);
}

/** Usage text for --help and for errors. */
export function usage(): string {
  return agentSettings().map(([env, flag, def]) => `  ${flag.padEnd(17)} ${env.padEnd(22)} default: ${def === "" ? "(none)" : def}`).join("\n");
}

/**
 * Reads env vars, then `--flag value` / `--flag=value` arguments (flags win), and
 * validates everything at once: the QuantixError names every bad setting.
 */
export function loadAgentConfig(env: Record<string, string | undefined>, argv: readonly string[] = []): AgentConfig {
  const problems: string[] = [];
  const raw = new Map<Key, string>();
  for (const [key, [name]] of Object.entries(SETTINGS) as [Key, (typeof SETTINGS)[Key]][]) {
    const v = env[name];
    if (v !== undefined) raw.set(key, v);
  }
  const byFlag = new Map(Object.entries(SETTINGS).map(([k, [, flag]]) => [flag as string, k as Key]));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const key = byFlag.get(flag);
    if (!key) {
      problems.push(`unknown argument '${arg}'`);
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) problems.push(`${flag} needs a value`);
    else raw.set(key, value);
  }
  const get = (k: Key): string => raw.get(k) ?? SETTINGS[k][2];
  const name = (k: Key) => `${SETTINGS[k][0]} (${SETTINGS[k][1]})`;

  const backend = get("backend");
  if (!(BACKEND_TYPES as readonly string[]).includes(backend)) problems.push(`${name("backend")} is '${backend}'; it must be one of ${BACKEND_TYPES.join(", ")}`);
  const kvm = get("qemuKvm").toLowerCase();
  if (kvm !== "true" && kvm !== "false") problems.push(`${name("qemuKvm")} must be true or false, got '${get("qemuKvm")}'`);
  const portText = get("port");
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) problems.push(`${name("port")} must be a port number 0-65535, got '${portText}'`);
  const address = get("address");
  if (address === "" || /[\s/]/.test(address)) problems.push(`${name("address")} must be an IP address or host name, got '${address}'`);
  const stateDir = get("stateDir");
  if (stateDir === "" || /[\u0000-\u001f]/.test(stateDir)) problems.push(`${name("stateDir")} must be a directory path`);
  const baseUrl = (k: "controlPlane" | "join", protocols: readonly string[], example: string): void => {
    const v = get(k);
    if (v === "") return;
    let ok = false;
    try {
      const u = new URL(v);
      ok = protocols.includes(u.protocol) && u.pathname === "/" && u.search === "" && u.username === "" && u.password === "";
    } catch {
      ok = false;
    }
    if (!ok) problems.push(`${name(k)} must be a base URL such as ${example}, got '${v}'`);
  };
  const cp = get("controlPlane");
  baseUrl("controlPlane", ["http:", "https:"], "http://127.0.0.1:8080");
  const join = get("join");
  baseUrl("join", ["https:"], "https://cp.example:8080 (enrollment is over TLS)");
  const joinToken = get("joinToken");
  const caCert = get("caCert");
  if (join !== "") {
    if (joinToken === "") problems.push(`${name("joinToken")} is required with ${SETTINGS.join[1]}: the one-time token from CreateJoinToken`);
    if (caCert === "") problems.push(`${name("caCert")} is required with ${SETTINGS.join[1]}: the cluster CA certificate (ca.crt) that verifies the control plane`);
  }
  if (caCert !== "" && /[\u0000-\u001f]/.test(caCert)) problems.push(`${name("caCert")} must be a file path`);
  const nodeName = get("nodeName") || hostname();
  if (!/^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/.test(nodeName)) problems.push(`${name("nodeName")} must be a host name (letters, digits, '.', '-'), got '${nodeName}'`);
  for (const k of ["chEndpoint", "fcEndpoint"] as const) {
    const why = endpointProblem(get(k));
    if (why) problems.push(`${name(k)} ${why}`);
  }
  if (get("qemuEndpoint") !== QEMU_ENDPOINT) {
    problems.push(`${name("qemuEndpoint")} must be ${QEMU_ENDPOINT} (the agent runs QEMU itself, one process per VM; libvirt and remote URIs are not supported), got '${get("qemuEndpoint")}'`);
  }
  for (const k of ["chBinary", "fcBinary", "qemuBinary"] as const) {
    if (!/^([A-Za-z0-9._+-]+|\/[^\u0000-\u001f]+)$/.test(get(k))) problems.push(`${name(k)} must be a command name on PATH or an absolute path, got '${get(k)}'`);
  }
  const dirList = (k: "sharedDirs" | "imageDirs", text: string): string[] => {
    const dirs = text.split(",").map((d) => d.trim()).filter((d) => d !== "");
    for (const d of dirs) if (!d.startsWith("/") || /[\u0000-\u001f]/.test(d)) problems.push(`${name(k)} must list absolute directory paths separated by commas, got '${d}'`);
    return dirs;
  };
  const sharedDirs = dirList("sharedDirs", get("sharedDirs"));
  const imageDirs = raw.has("imageDirs") ? dirList("imageDirs", get("imageDirs")) : [joinPath(resolve(stateDir), "images"), "/var/lib/quantix/images"];
  const poolRoot = raw.has("poolRoot") ? get("poolRoot") : joinPath(resolve(stateDir), "pools");
  if (!poolRoot.startsWith("/") || /[\u0000-\u001f]/.test(poolRoot)) problems.push(`${name("poolRoot")} must be an absolute directory path, got '${poolRoot}'`);
  if (!["on", "off"].includes(get("network"))) problems.push(`${name("network")} must be on or off, got '${get("network")}'`);
  if (get("networkNetns") !== "" && !NETNS_NAME.test(get("networkNetns"))) problems.push(`${name("networkNetns")} must be a network namespace name (letters, digits, '_', '.', '-'), got '${get("networkNetns")}'`);
  const underlay = get("networkUnderlayAddress");
  if (underlay !== "" && parseIp4(underlay) === undefined) problems.push(`${name("networkUnderlayAddress")} must be an IPv4 address, got '${underlay}'`);
  const physical = parsePhysicalNetworks(get("networkPhysicalNetworks"));
  for (const p of physical.problems) problems.push(`${name("networkPhysicalNetworks")}: ${p}`);
  const simBootText = get("simBootMs");
  const simBootMs = Number(simBootText);
  if (!/^\d{1,6}$/.test(simBootText) || simBootMs > MAX_SIM_BOOT_MS) problems.push(`${name("simBootMs")} must be a whole number of ms, 0-${MAX_SIM_BOOT_MS}, got '${simBootText}'`);
  if (problems.length > 0) throw new QuantixError("invalid_argument", `invalid agent configuration:\n  ${problems.join("\n  ")}`);
  return {
    backend: backend as BackendType,
    chEndpoint: get("chEndpoint"),
    fcEndpoint: get("fcEndpoint"),
    qemuEndpoint: get("qemuEndpoint"),
    chBinary: get("chBinary"),
    fcBinary: get("fcBinary"),
    qemuBinary: get("qemuBinary"),
    qemuKvm: kvm === "true",
    address,
    port,
    stateDir: resolve(stateDir),
    controlPlane: cp !== "" ? cp.replace(/\/$/, "") : join !== "" ? join.replace(/\/$/, "") : undefined,
    nodeName,
    sharedDirs,
    imageDirs,
    poolRoot: resolve(poolRoot),
    network: get("network") === "on",
    networkNetns: get("networkNetns") === "" ? undefined : get("networkNetns"),
    networkUnderlayAddress: underlay === "" ? undefined : underlay,
    networkPhysicalNetworks: physical.map,
    join: join === "" ? undefined : join.replace(/\/$/, ""),
    joinToken: joinToken === "" ? undefined : joinToken,
    caCert: caCert === "" ? undefined : caCert,
    simBootMs,
  };
}
