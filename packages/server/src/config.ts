import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { availableParallelism } from "node:os";
import { QUOTA_RESOURCES, QuantixError, SCORING_STRATEGIES, type Limits, type QuotaResource, type ScoringStrategy } from "@quantix/core";

/** The control plane's settings, read from the environment and validated at start. */
export interface ControlPlaneConfig {
  /** Host to listen on (QUANTIX_ADDR's host part). */
  readonly host: string;
  /** Port to listen on; 0 picks a free one (tests). */
  readonly port: number;
  /** Where state lives (QUANTIX_STORE): memory, embedded (default, under dataDir) or a PostgreSQL URL. */
  readonly store: StoreConfig;
  /** Seed the seeds' demo data into an empty store (QUANTIX_DEMO, default 1). */
  readonly demo: boolean;
  readonly logLevel: "debug" | "info" | "warn" | "error" | "silent";
  /** How long power actions wait for the node when the client set no deadline. */
  readonly defaultDeadlineMs: number;
  /** Largest request message accepted, in bytes. */
  readonly maxRequestBytes: number;
  /** Largest response message sent, in bytes. */
  readonly maxResponseBytes: number;
  /** Concurrent HTTP/2 streams per connection. */
  readonly maxConcurrentStreams: number;
  /** A connection without traffic for this long is closed (QUANTIX_IDLE_TIMEOUT_MS). */
  readonly idleTimeoutMs: number;
  /** How long a connection may take to send its first request's headers (QUANTIX_HEADERS_TIMEOUT_MS). */
  readonly headersTimeoutMs: number;
  /** Connections one client address may hold at once (QUANTIX_MAX_CONNECTIONS_PER_SOURCE). */
  readonly maxConnectionsPerSource: number;
  /** How long graceful shutdown waits for in-flight calls. */
  readonly shutdownGraceMs: number;
  /** Timing of the simulated hypervisor's boot, in ms. */
  readonly simBootMs: number;
  /**
   * Where the demo's simulated hosts keep their storage pools (QUANTIX_STORAGE_DIR); by
   * default `<dataDir>/storage` with the embedded store, and none otherwise (pools on
   * simulated hosts then fail with the reason).
   */
  readonly storageDir: string | undefined;
  /** Directories below which SHARED_DIR pools of simulated hosts may live (QUANTIX_SHARED_DIRS, ':'-separated absolute paths). */
  readonly sharedDirs: readonly string[];
  /** The built web dashboard served at `/` (QUANTIX_DASHBOARD_DIR); default packages/dashboard/dist of this checkout. */
  readonly dashboardDir: string | undefined;
  readonly storeTuning: StoreTuning;
  /**
   * Processes serving the one port (QUANTIX_WORKERS: a number, or "auto" for one per core;
   * default 1). More than one needs PostgreSQL: each worker is a replica of the same
   * database, the kernel's connections are handed out among them (node:cluster), and
   * controllers run on the store's leader only, as with replicas on several hosts.
   */
  readonly workers: number;
  /** How the scheduler ranks nodes that fit (QUANTIX_SCHEDULER_STRATEGY): spread (default), pack or balanced. */
  readonly schedulerStrategy: ScoringStrategy;
  /** Silence after which a node is OFFLINE, i.e. lost: HA restarts its VMs elsewhere (QUANTIX_NODE_LOST_AFTER_SEC). */
  readonly nodeLostAfterSec: number;
  /** How long lifecycle events are kept (QUANTIX_EVENT_RETENTION_SEC). */
  readonly eventRetentionSec: number;
  /** The MemoryGateway's history: versions kept for reads at a version and resumes (QUANTIX_GATEWAY_HISTORY_VERSIONS). */
  readonly gatewayHistoryVersions: number;
  /** Lifetime of the access tokens Login returns (QUANTIX_ACCESS_TOKEN_TTL_SEC). */
  readonly accessTokenTtlSec: number;
  /** Failed logins allowed at once, per username and per source address (QUANTIX_LOGIN_FAILURE_BURST). */
  readonly loginFailureBurst: number;
  /** Failed logins forgiven per minute (QUANTIX_LOGIN_FAILURES_PER_MIN). */
  readonly loginFailuresPerMin: number;
  /** Limits of projects whose quota does not set them (QUANTIX_DEFAULT_QUOTA, JSON; default none: unlimited). */
  readonly defaultQuota: Limits;
  /** Calls per second each caller may make on average (QUANTIX_RATE_LIMIT_RPS); 0 (the default) turns rate limiting off. */
  readonly rateLimitRps: number;
  /** Calls a caller may make at once before the rate applies (QUANTIX_RATE_LIMIT_BURST; default twice the rate). */
  readonly rateLimitBurst: number;
  /** How long audit records are kept (QUANTIX_AUDIT_RETENTION_SEC). */
  readonly auditRetentionSec: number;
  /** The API's certificate (QUANTIX_TLS_CERT, QUANTIX_TLS_KEY, QUANTIX_TLS_CLIENT_CA); undefined: cleartext. */
  readonly tls: TlsFiles | undefined;
  /** The cluster CA that signs agents' certificates at enrollment (QUANTIX_CA_CERT, QUANTIX_CA_KEY); undefined: no enrollment. */
  readonly ca: CaFiles | undefined;
  /** Serve without TLS on a non-loopback address anyway (QUANTIX_INSECURE=1); logged loudly. */
  readonly insecure: boolean;
  /**
   * Local trust mode: on a loopback address without TLS, a call without a token acts as
   * the system admin (LOCAL_PRINCIPAL), like Incus's unix socket, and agents register
   * without certificates; a call with a token is authenticated as usual.
   * QUANTIX_LOCAL_TRUST=0 (or an override to false) turns it off; derived after overrides.
   */
  readonly localTrust: boolean;
}

/** PEM files of the API's TLS certificate. */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** Extra CAs whose client certificates are verified (the cluster CA's always are, when configured). */
  readonly clientCaFile: string | undefined;
}

/** PEM files of the cluster CA. */
export interface CaFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** The store a control plane uses. */
export type StoreConfig =
  | { readonly kind: "memory" }
  | { readonly kind: "embedded"; readonly dataDir: string }
  | { readonly kind: "postgres"; readonly url: string };

/** Tuning of the durable stores. */
export interface StoreTuning {
  /** Revisions of change history kept for resuming watchers (QUANTIX_HISTORY_REVISIONS). */
  readonly historyRevisions: number;
  /** Connections to PostgreSQL per replica (QUANTIX_PG_MAX_CONNECTIONS). */
  readonly pgMaxConnections: number;
}

const DEFAULTS: ControlPlaneConfig = {
  host: "127.0.0.1",
  port: 8080,
  store: { kind: "embedded", dataDir: "./.quantix-data" },
  storeTuning: { historyRevisions: 100_000, pgMaxConnections: 10 },
  workers: 1,
  demo: true,
  logLevel: "info",
  defaultDeadlineMs: 30_000,
  maxRequestBytes: 4 * 1024 * 1024,
  maxResponseBytes: 64 * 1024 * 1024,
  maxConcurrentStreams: 10_000,
  idleTimeoutMs: 300_000,
  headersTimeoutMs: 20_000,
  maxConnectionsPerSource: 1024,
  shutdownGraceMs: 10_000,
  simBootMs: 300,
  storageDir: undefined,
  sharedDirs: [],
  dashboardDir: undefined,
  schedulerStrategy: "spread",
  nodeLostAfterSec: 300,
  eventRetentionSec: 7 * 86_400,
  gatewayHistoryVersions: 100_000,
  accessTokenTtlSec: 3600,
  loginFailureBurst: 5,
  loginFailuresPerMin: 5,
  defaultQuota: {},
  rateLimitRps: 0,
  rateLimitBurst: 0,
  auditRetentionSec: 90 * 86_400,
  tls: undefined,
  ca: undefined,
  insecure: false,
  localTrust: true,
};

/** Reads and validates the configuration; throws with every problem named. */
export function loadConfig(env: Record<string, string | undefined>, overrides: Partial<ControlPlaneConfig> = {}): ControlPlaneConfig {
  const problems: string[] = [];
  const int = (name: string, min: number, max: number, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(raw)} must be an integer between ${min} and ${max}`);
      return fallback;
    }
    return n;
  };
  let host = DEFAULTS.host;
  let port = DEFAULTS.port;
  const addr = env["QUANTIX_ADDR"];
  if (addr) {
    const m = /^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9.-]*):(\d{1,5})$/.exec(addr);
    if (!m || Number(m[2]) > 65535) problems.push(`QUANTIX_ADDR=${JSON.stringify(addr)} must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080`);
    else {
      host = m[1]!.replace(/^\[|\]$/g, "") || "0.0.0.0";
      port = Number(m[2]);
    }
  }
  const store = parseStore(env, problems);
  const workers = parseWorkers(env["QUANTIX_WORKERS"], store, problems);
  const demo = env["QUANTIX_DEMO"] ?? "1";
  if (!["0", "1", "true", "false"].includes(demo)) problems.push(`QUANTIX_DEMO=${JSON.stringify(demo)} must be 0 or 1`);
  const level = env["QUANTIX_LOG_LEVEL"] ?? DEFAULTS.logLevel;
  if (!["debug", "info", "warn", "error", "silent"].includes(level)) problems.push(`QUANTIX_LOG_LEVEL=${JSON.stringify(level)} must be debug, info, warn, error or silent`);
  const strategy = env["QUANTIX_SCHEDULER_STRATEGY"] || DEFAULTS.schedulerStrategy;
  if (!(SCORING_STRATEGIES as readonly string[]).includes(strategy)) problems.push(`QUANTIX_SCHEDULER_STRATEGY=${JSON.stringify(strategy)} must be spread, pack or balanced`);
  const localTrustEnv = env["QUANTIX_LOCAL_TRUST"] ?? "1";
  if (!["0", "1"].includes(localTrustEnv)) problems.push(`QUANTIX_LOCAL_TRUST=${JSON.stringify(localTrustEnv)} must be 0 or 1`);
  const rateLimitRps = int("QUANTIX_RATE_LIMIT_RPS", 0, 10_000_000, DEFAULTS.rateLimitRps);
  const insecureRaw = env["QUANTIX_INSECURE"] ?? "0";
  if (!["0", "1", "true", "false"].includes(insecureRaw)) problems.push(`QUANTIX_INSECURE=${JSON.stringify(insecureRaw)} must be 0 or 1`);
  const merged: ControlPlaneConfig = {
    host,
    port,
    store,
    demo: demo === "1" || demo === "true",
    logLevel: level as ControlPlaneConfig["logLevel"],
    defaultDeadlineMs: int("QUANTIX_DEFAULT_DEADLINE_MS", 1, 3_600_000, DEFAULTS.defaultDeadlineMs),
    maxRequestBytes: int("QUANTIX_MAX_REQUEST_BYTES", 1024, 256 * 1024 * 1024, DEFAULTS.maxRequestBytes),
    maxResponseBytes: int("QUANTIX_MAX_RESPONSE_BYTES", 1024, 1024 * 1024 * 1024, DEFAULTS.maxResponseBytes),
    maxConcurrentStreams: int("QUANTIX_MAX_CONCURRENT_STREAMS", 1, 100_000, DEFAULTS.maxConcurrentStreams),
    idleTimeoutMs: int("QUANTIX_IDLE_TIMEOUT_MS", 1000, 86_400_000, DEFAULTS.idleTimeoutMs),
    headersTimeoutMs: int("QUANTIX_HEADERS_TIMEOUT_MS", 100, 600_000, DEFAULTS.headersTimeoutMs),
    maxConnectionsPerSource: int("QUANTIX_MAX_CONNECTIONS_PER_SOURCE", 1, 100_000, DEFAULTS.maxConnectionsPerSource),
    shutdownGraceMs: int("QUANTIX_SHUTDOWN_GRACE_MS", 0, 600_000, DEFAULTS.shutdownGraceMs),
    simBootMs: int("QUANTIX_SIM_BOOT_MS", 0, 600_000, DEFAULTS.simBootMs),
    storageDir: parseStorageDir(env, problems),
    sharedDirs: parseSharedDirs(env["QUANTIX_SHARED_DIRS"], problems),
    dashboardDir: env["QUANTIX_DASHBOARD_DIR"] || undefined,
    schedulerStrategy: strategy as ScoringStrategy,
    nodeLostAfterSec: int("QUANTIX_NODE_LOST_AFTER_SEC", 1, 86_400, DEFAULTS.nodeLostAfterSec),
    eventRetentionSec: int("QUANTIX_EVENT_RETENTION_SEC", 60, 366 * 86_400, DEFAULTS.eventRetentionSec),
    gatewayHistoryVersions: int("QUANTIX_GATEWAY_HISTORY_VERSIONS", 10, 1_000_000_000, DEFAULTS.gatewayHistoryVersions),
    accessTokenTtlSec: int("QUANTIX_ACCESS_TOKEN_TTL_SEC", 60, 86_400, DEFAULTS.accessTokenTtlSec),
    loginFailureBurst: int("QUANTIX_LOGIN_FAILURE_BURST", 1, 10_000, DEFAULTS.loginFailureBurst),
    loginFailuresPerMin: int("QUANTIX_LOGIN_FAILURES_PER_MIN", 1, 100_000, DEFAULTS.loginFailuresPerMin),
    defaultQuota: parseDefaultQuota(env["QUANTIX_DEFAULT_QUOTA"], problems),
    rateLimitRps,
    rateLimitBurst: int("QUANTIX_RATE_LIMIT_BURST", 1, 100_000_000, Math.max(1, rateLimitRps * 2)),
    auditRetentionSec: int("QUANTIX_AUDIT_RETENTION_SEC", 60, 10 * 366 * 86_400, DEFAULTS.auditRetentionSec),
    workers,
    storeTuning: {
      historyRevisions: int("QUANTIX_HISTORY_REVISIONS", 10, 100_000_000, DEFAULTS.storeTuning.historyRevisions),
      pgMaxConnections: int("QUANTIX_PG_MAX_CONNECTIONS", 2, 1000, DEFAULTS.storeTuning.pgMaxConnections),
    },
    tls: parseTls(env, problems),
    ca: parseCa(env, problems),
    insecure: insecureRaw === "1" || insecureRaw === "true",
    localTrust: localTrustEnv === "1",
    ...overrides,
  };
  // Local trust needs a loopback address and no TLS, whatever was asked.
  const cfg: ControlPlaneConfig = { ...merged, localTrust: merged.localTrust && isLoopback(merged.host) && merged.tls === undefined };
  if (!isLoopback(cfg.host) && cfg.tls === undefined && !cfg.insecure) {
    problems.push(
      `the control plane would listen on ${cfg.host}, which is not a loopback address, without TLS: anyone who reaches it could drive it. ` +
        "Set QUANTIX_TLS_CERT and QUANTIX_TLS_KEY (a first setup: quantix ca init --dir <d>, then quantix ca issue-server --dir <d> --name <this host's name> --ip <its address>; see docs/api/tls-and-enrollment.md), " +
        "or listen on a loopback address (QUANTIX_ADDR=127.0.0.1:8080: local trust mode), or set QUANTIX_INSECURE=1 to serve it without TLS anyway",
    );
  }
  if (problems.length > 0) throw new QuantixError("invalid_argument", `invalid configuration:\n  ${problems.join("\n  ")}`);
  return cfg;
}

/** The most worker processes one control plane may run. */
export const MAX_WORKERS = 64;

function parseWorkers(raw: string | undefined, store: StoreConfig, problems: string[]): number {
  if (raw === undefined || raw === "") return DEFAULTS.workers;
  const n = raw === "auto" ? Math.min(MAX_WORKERS, availableParallelism()) : Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) {
    problems.push(`QUANTIX_WORKERS=${JSON.stringify(raw)} must be "auto" (one per core) or an integer between 1 and ${MAX_WORKERS}`);
    return DEFAULTS.workers;
  }
  if (n > 1 && store.kind !== "postgres") {
    problems.push(`QUANTIX_WORKERS=${JSON.stringify(raw)} (${n} processes) needs QUANTIX_STORE=postgres://...: the ${store.kind} store lives inside one process; use QUANTIX_WORKERS=1, or PostgreSQL to serve from several`);
  }
  return n;
}

/** The most a limit may be (amounts stay exact as JavaScript numbers). */
export const MAX_QUOTA_LIMIT = 1e15;

/** QUANTIX_DEFAULT_QUOTA: a JSON object of limits by resource, e.g. {"vms": 50, "vcpus": 200, "memory_mib": 409600}. */
function parseDefaultQuota(raw: string | undefined, problems: string[]): Limits {
  if (raw === undefined || raw.trim() === "") return {};
  const bad = () => problems.push(`QUANTIX_DEFAULT_QUOTA must be a JSON object of limits (integers from -1, unlimited, to ${MAX_QUOTA_LIMIT}) by resource, among ${QUOTA_RESOURCES.join(", ")}; e.g. {"vms": 50, "vcpus": 200, "memory_mib": 409600}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    bad();
    return {};
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    bad();
    return {};
  }
  const out: Partial<Record<QuotaResource, number>> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (!(QUOTA_RESOURCES as readonly string[]).includes(k) || typeof v !== "number" || !Number.isInteger(v) || v < -1 || v > MAX_QUOTA_LIMIT) {
      bad();
      return {};
    }
    out[k as QuotaResource] = v;
  }
  return out;
}

/** Whether `host` is a loopback address (127.0.0.0/8, ::1) or "localhost"; any other name or address is not. */
export function isLoopback(host: string): boolean {
  if (host === "localhost" || host === "::1") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}

/** A PEM file setting: a path without control characters, of a file that exists. */
function pemFile(env: Record<string, string | undefined>, name: string, problems: string[]): string | undefined {
  const v = env[name];
  if (v === undefined || v === "") return undefined;
  if (/[\u0000-\u001f]/.test(v)) problems.push(`${name} must be a file path without control characters`);
  else if (!existsSync(v)) problems.push(`${name}=${JSON.stringify(v)}: no such file`);
  return v;
}

function parseTls(env: Record<string, string | undefined>, problems: string[]): TlsFiles | undefined {
  const certFile = pemFile(env, "QUANTIX_TLS_CERT", problems);
  const keyFile = pemFile(env, "QUANTIX_TLS_KEY", problems);
  const clientCaFile = pemFile(env, "QUANTIX_TLS_CLIENT_CA", problems);
  if (certFile === undefined && keyFile === undefined) {
    if (clientCaFile !== undefined) problems.push("QUANTIX_TLS_CLIENT_CA needs QUANTIX_TLS_CERT and QUANTIX_TLS_KEY (client certificates are verified over TLS only)");
    return undefined;
  }
  if (certFile === undefined || keyFile === undefined) {
    problems.push("QUANTIX_TLS_CERT and QUANTIX_TLS_KEY go together: set both (PEM files of the server's certificate and its key)");
    return undefined;
  }
  return { certFile, keyFile, clientCaFile };
}

function parseCa(env: Record<string, string | undefined>, problems: string[]): CaFiles | undefined {
  const certFile = pemFile(env, "QUANTIX_CA_CERT", problems);
  const keyFile = pemFile(env, "QUANTIX_CA_KEY", problems);
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) {
    problems.push("QUANTIX_CA_CERT and QUANTIX_CA_KEY go together: set both (the cluster CA's certificate and key, from quantix ca init)");
    return undefined;
  }
  if (env["QUANTIX_TLS_CERT"] === undefined || env["QUANTIX_TLS_CERT"] === "") problems.push("QUANTIX_CA_CERT and QUANTIX_CA_KEY (agent enrollment) need TLS: set QUANTIX_TLS_CERT and QUANTIX_TLS_KEY too");
  return { certFile, keyFile };
}

function parseStore(env: Record<string, string | undefined>, problems: string[]): StoreConfig {
  const raw = env["QUANTIX_STORE"] || "embedded";
  const dataDir = env["QUANTIX_DATA_DIR"] || "./.quantix-data";
  if (raw === "memory") return { kind: "memory" };
  if (raw === "embedded") {
    if (/[\0\n\r]/.test(dataDir)) problems.push("QUANTIX_DATA_DIR must be a path without control characters");
    return { kind: "embedded", dataDir };
  }
  if (/^postgres(ql)?:\/\//.test(raw)) {
    try {
      const u = new URL(raw);
      if (!u.hostname && !u.searchParams.get("host")) throw new Error("no host");
      return { kind: "postgres", url: raw };
    } catch {
      problems.push(`QUANTIX_STORE=${JSON.stringify(redactUrl(raw))} is not a valid PostgreSQL URL: use postgres://user:password@host:5432/database`);
      return { kind: "memory" };
    }
  }
  problems.push(`QUANTIX_STORE=${JSON.stringify(redactUrl(raw))} must be "embedded" (the default: a database under QUANTIX_DATA_DIR), "memory" (nothing kept), or a PostgreSQL URL (postgres://user:password@host:5432/database)`);
  return { kind: "memory" };
}

/** A URL without its password, for messages and logs. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return raw.replace(/:\/\/([^:@/]*):[^@/]*@/, "://$1:***@");
  }
}

function parseStorageDir(env: Record<string, string | undefined>, problems: string[]): string | undefined {
  const raw = env["QUANTIX_STORAGE_DIR"];
  if (raw !== undefined && raw !== "") {
    if (/[\0\n\r]/.test(raw)) problems.push("QUANTIX_STORAGE_DIR must be a path without control characters");
    return raw;
  }
  // The default depends on the store (app.ts: `<dataDir>/storage` with the embedded one).
  return undefined;
}

function parseSharedDirs(raw: string | undefined, problems: string[]): string[] {
  if (raw === undefined || raw === "") return [];
  const dirs = raw.split(":").filter((d) => d !== "");
  for (const d of dirs) if (!d.startsWith("/") || /[\0\n\r]/.test(d)) problems.push(`QUANTIX_SHARED_DIRS: ${JSON.stringify(d)} must be an absolute path without control characters`);
  return dirs;
}
