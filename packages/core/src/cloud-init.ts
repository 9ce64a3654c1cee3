import { isMap, parseDocument, stringify } from "yaml";
import type { Violations } from "./violations.js";

/**
 * cloud-init NoCloud data: the rules both the control plane (spec.provisioning.cloud_init)
 * and the agent (vmm.v1 VmConfig.cloud_init) apply, and the meta-data file the agent
 * writes into the seed. Pure: parsing only, no I/O.
 */

/** The three documents of a NoCloud seed, as the user gives them. */
export interface CloudInitData {
  readonly userData: string;
  readonly metaData: string;
  readonly networkConfig: string;
}

/** Largest user-data, meta-data or network-config, in bytes (UTF-8). */
export const CLOUD_INIT_MAX_BYTES = 65_536;

const LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

/** Whether `name` is a hostname: dot-separated labels of letters, digits and '-', at most 253 characters. */
export function isHostname(name: string): boolean {
  return name.length >= 1 && name.length <= 253 && name.split(".").every((l) => LABEL.test(l));
}

/**
 * Checks the three documents under `prefix` (e.g. "spec.provisioning.cloud_init"): sizes,
 * meta-data and network-config as YAML mappings, no instance-id (derived from the VM id),
 * and a local-hostname that is a hostname. Records every violation.
 */
export function validateCloudInit(v: Violations, prefix: string, ci: CloudInitData): void {
  const docs = [["user_data", ci.userData], ["meta_data", ci.metaData], ["network_config", ci.networkConfig]] as const;
  let tooLarge = false;
  for (const [name, text] of docs) {
    if (Buffer.byteLength(text) > CLOUD_INIT_MAX_BYTES) {
      v.add(`${prefix}.${name}`, "TOO_LARGE", `must be at most ${CLOUD_INIT_MAX_BYTES} bytes, got ${Buffer.byteLength(text)}`);
      tooLarge = true;
    }
  }
  if (tooLarge) return;
  const meta = mapping(v, `${prefix}.meta_data`, ci.metaData);
  if (meta) {
    if (meta.has("instance-id")) v.add(`${prefix}.meta_data`, "INVALID_FORMAT", "must not set instance-id: it is derived from the VM id");
    const host = meta.get("local-hostname");
    if (host !== undefined && (typeof host !== "string" || !isHostname(host))) {
      v.add(`${prefix}.meta_data`, "INVALID_FORMAT", "local-hostname must be a hostname: dot-separated labels of 1-63 letters, digits or '-' (not at either end), at most 253 characters");
    }
  }
  mapping(v, `${prefix}.network_config`, ci.networkConfig);
}

/**
 * The meta-data file of a VM's seed: the user's mapping with `instance-id` set to the VM
 * id and `local-hostname` defaulting to one derived from the VM id. Call on validated data.
 */
export function nocloudMetaData(vmId: string, metaData: string): string {
  const user = metaData.trim() === "" ? new Map<string, unknown>() : toMap(metaData);
  const out: Record<string, unknown> = { "instance-id": vmId, "local-hostname": hostnameFor(vmId) };
  for (const [k, value] of user) if (k !== "instance-id") out[String(k)] = value;
  return stringify(out);
}

/** A hostname from a VM id (letters, digits, '_' and '-'): '_' becomes '-', no '-' at the ends. */
export function hostnameFor(vmId: string): string {
  const name = vmId.replaceAll("_", "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "");
  return name === "" ? "vm" : name;
}

/** Parses `text` as a YAML mapping (empty: none); records a violation and answers undefined otherwise. */
function mapping(v: Violations, field: string, text: string): Map<unknown, unknown> | undefined {
  if (text.trim() === "") return undefined;
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    v.add(field, "INVALID_FORMAT", `must be YAML: ${doc.errors[0]!.message.split("\n")[0]}`);
    return undefined;
  }
  if (!isMap(doc.contents)) {
    v.add(field, "INVALID_FORMAT", "must be a YAML mapping (key: value lines)");
    return undefined;
  }
  try {
    return toMap(text);
  } catch (err) {
    // An alias bomb ("billion laughs") exceeds maxAliasCount.
    v.add(field, "INVALID_FORMAT", `must be plain YAML: ${err instanceof Error ? err.message : String(err)}`);
    return undefined;
  }
}

function toMap(text: string): Map<unknown, unknown> {
  return parseDocument(text).toJS({ mapAsMap: true, maxAliasCount: 100 }) as Map<unknown, unknown>;
}
