import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { QuantixError } from "@quantix/core";
import { certificateInfo, createClusterCa, issueWithNewKey } from "@quantix/rpc";
import { checkDir, writePemFiles } from "./pem-files.js";

/** The files `quantix ca` writes in its directory. */
export const CA_FILES = { caCert: "ca.crt", caKey: "ca.key", serverCert: "server.crt", serverKey: "server.key" } as const;

/** Validity of the cluster CA (10 years) and of a server certificate (1 year), in days, unless --days says otherwise. */
const CA_DAYS = 3650;
const SERVER_DAYS = 365;

export const CA_USAGE = `usage:
  quantix ca init --dir <d> [--name <CA name>] [--days <n>] [--force]
      creates the cluster CA: <d>/ca.key (0600) and <d>/ca.crt (ECDSA P-256, ${CA_DAYS} days)
  quantix ca issue-server --dir <d> --name <dns name> [--name <dns name>...] [--ip <address>...] [--days <n>] [--force]
      issues the control plane's server certificate, signed by <d>/ca.key: <d>/server.key (0600), <d>/server.crt (${SERVER_DAYS} days)
Files are never replaced without --force.`;

/** Runs `quantix ca <args>`; returns what to print. Throws QuantixError for bad input (nothing written then). */
export async function runCaCommand(args: readonly string[], now = new Date()): Promise<string> {
  const [sub, ...rest] = args;
  const flags = parseFlags(rest, { "--dir": "one", "--name": "many", "--ip": "many", "--days": "one", "--force": "bool" });
  const dir = checkDir("--dir", flags.one("--dir"));
  const force = flags.bool("--force");
  switch (sub) {
    case "init": {
      const name = flags.many("--name")[0] ?? "Quantix cluster CA";
      if (flags.many("--name").length > 1 || flags.many("--ip").length > 0) throw new QuantixError("invalid_argument", "ca init takes one --name (the CA's name) and no --ip");
      const ca = await createClusterCa(checkName(name), days(flags.one("--days"), CA_DAYS), now);
      const written = await writePemFiles(dir, [{ name: CA_FILES.caKey, pem: ca.keyPem, secret: true }, { name: CA_FILES.caCert, pem: ca.certPem, secret: false }], force);
      return `wrote ${written.join(", ")}\nkeep ${written[0]} secret: it signs every certificate of the cluster (the control plane reads it as QUANTIX_CA_KEY)\n`;
    }
    case "issue-server": {
      const names = flags.many("--name").map(checkDnsName);
      const ips = flags.many("--ip").map(checkIp);
      if (names.length === 0) throw new QuantixError("invalid_argument", "--name <dns name> is required: the name clients use to reach the control plane (repeat it for more names; add --ip for addresses)");
      const ca = { certPem: await readCa(dir, CA_FILES.caCert), keyPem: await readCa(dir, CA_FILES.caKey) };
      const issued = await issueWithNewKey(ca, { commonName: names[0]!, dnsNames: names, ipAddresses: ips, usages: ["server"], validityDays: days(flags.one("--days"), SERVER_DAYS) }, now);
      const written = await writePemFiles(dir, [{ name: CA_FILES.serverKey, pem: issued.keyPem, secret: true }, { name: CA_FILES.serverCert, pem: issued.certPem, secret: false }], force);
      const info = certificateInfo(issued.certPem);
      return `wrote ${written.join(", ")} for ${[...names, ...ips].join(", ")}, valid until ${info.notAfter.toISOString()}\nstart the control plane with QUANTIX_TLS_CERT=${written[1]} QUANTIX_TLS_KEY=${written[0]} QUANTIX_CA_CERT=${join(dir, CA_FILES.caCert)} QUANTIX_CA_KEY=${join(dir, CA_FILES.caKey)}\n`;
    }
    default:
      throw new QuantixError("invalid_argument", sub === undefined ? "a subcommand is required" : `unknown subcommand '${sub}'`);
  }
}

async function readCa(dir: string, name: string): Promise<string> {
  try {
    return await readFile(join(dir, name), "utf8");
  } catch {
    throw new QuantixError("failed_precondition", `cannot read ${join(dir, name)}: create the CA first with quantix ca init --dir ${dir}`);
  }
}

function days(raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 36_500) throw new QuantixError("invalid_argument", `--days must be a whole number of days from 1 to 36500, got '${raw}'`);
  return n;
}

function checkName(name: string): string {
  if (name.length === 0 || name.length > 64 || /[\u0000-\u001f]/.test(name)) throw new QuantixError("invalid_argument", "--name must be 1-64 printable characters");
  return name;
}

function checkDnsName(name: string): string {
  if (!/^(?=.{1,253}$)([a-zA-Z0-9*]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(name)) throw new QuantixError("invalid_argument", `--name must be a DNS name (letters, digits, '-', dots), got '${name}'`);
  return name;
}

function checkIp(ip: string): string {
  if (isIP(ip) === 0) throw new QuantixError("invalid_argument", `--ip must be an IPv4 or IPv6 address, got '${ip}'`);
  return ip;
}

type FlagKind = "one" | "many" | "bool";

/** `--flag value`, `--flag=value`, repeated flags, booleans; anything else is refused. */
function parseFlags(args: readonly string[], spec: Record<string, FlagKind>) {
  const values = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const kind = spec[flag];
    if (!kind) throw new QuantixError("invalid_argument", `unknown argument '${arg}'`);
    let value = "true";
    if (kind !== "bool") {
      const v = eq > 0 ? arg.slice(eq + 1) : args[++i];
      if (v === undefined) throw new QuantixError("invalid_argument", `${flag} needs a value`);
      value = v;
    }
    const list = values.get(flag) ?? [];
    if (kind === "one" && list.length > 0) throw new QuantixError("invalid_argument", `${flag} is given twice`);
    values.set(flag, [...list, value]);
  }
  return {
    one: (f: string) => values.get(f)?.[0],
    many: (f: string) => values.get(f) ?? [],
    bool: (f: string) => values.has(f),
  };
}
