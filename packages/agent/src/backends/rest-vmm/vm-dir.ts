import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import type { BackendVmState } from "../../backend.js";
import { VM_ID_PATTERN } from "../../vm-id.js";

// sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH = 107;

/** The files of one VM under `<stateDir>/vms/<vmId>/`. */
export interface VmPaths {
  readonly dir: string;
  readonly apiSocket: string;
  readonly pidFile: string;
  /** Where the VMM writes the guest's serial output. */
  readonly consoleFile: string;
  /** The VMM process's own stdout and stderr. */
  readonly vmmLog: string;
  readonly configFile: string;
  readonly runtimeFile: string;
}

/** What the backend persists about a VM's runtime, so a restarted agent can re-adopt it. */
export interface RuntimeRecord {
  readonly state: BackendVmState;
  readonly pid?: number | undefined;
  readonly startedAtMs?: number | undefined;
  readonly crashReason?: string | undefined;
}

/**
 * Validates `vmId` and returns its paths; INVALID_ARGUMENT for a bad id or a too long
 * socket path. The API socket is `<socketPrefix>-<vmId>.sock` when a prefix is given (the
 * agent's VMCP_CH_ENDPOINT / VMCP_FC_ENDPOINT), else `api.sock` in the VM's directory.
 */
export function vmPaths(stateDir: string, vmId: string, socketPrefix?: string): VmPaths {
  if (!VM_ID_PATTERN.test(vmId)) throw new QuantixError("invalid_argument", `VM id '${vmId}' must match ${VM_ID_PATTERN.source}`);
  const dir = join(stateDir, "vms", vmId);
  const paths: VmPaths = {
    dir,
    apiSocket: socketPrefix === undefined ? join(dir, "api.sock") : `${socketPrefix}-${vmId}.sock`,
    pidFile: join(dir, "vmm.pid"),
    consoleFile: join(dir, "console.log"),
    vmmLog: join(dir, "vmm.log"),
    configFile: join(dir, "config.binpb"),
    runtimeFile: join(dir, "runtime.json"),
  };
  if (Buffer.byteLength(paths.apiSocket) > MAX_SOCKET_PATH) {
    throw new QuantixError("invalid_argument", `the API socket path for VM '${vmId}' is longer than ${MAX_SOCKET_PATH} bytes; use a shorter state directory`);
  }
  return paths;
}

/** Creates the VM's directory with its config. */
export async function writeVmDir(paths: VmPaths, config: VmConfig): Promise<void> {
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  await writeAtomic(paths.configFile, toBinary(VmConfigSchema, config));
  await writeRuntime(paths, { state: "created" });
}

/** Reads the VM's config back. */
export async function readVmConfig(paths: VmPaths): Promise<VmConfig> {
  return fromBinary(VmConfigSchema, await readFile(paths.configFile));
}

/** Persists the runtime record and the pid file (written whole, then renamed, so a crash never leaves half a file). */
export async function writeRuntime(paths: VmPaths, record: RuntimeRecord): Promise<void> {
  await writeAtomic(paths.runtimeFile, JSON.stringify(record));
  if (record.pid !== undefined) await writeAtomic(paths.pidFile, `${record.pid}\n`);
  else await rm(paths.pidFile, { force: true });
}

/** Reads the runtime record; "created" when there is none. */
export async function readRuntime(paths: VmPaths): Promise<RuntimeRecord> {
  try {
    return JSON.parse(await readFile(paths.runtimeFile, "utf8")) as RuntimeRecord;
  } catch {
    return { state: "created" };
  }
}

/** The ids of the VM directories under the state dir that have a config (others are ignored). */
export async function listVmIds(stateDir: string): Promise<string[]> {
  const names = await readdir(join(stateDir, "vms")).catch(() => [] as string[]);
  const ids: string[] = [];
  for (const name of names.filter((n) => VM_ID_PATTERN.test(n)).sort()) {
    const ok = await readFile(join(stateDir, "vms", name, "config.binpb")).then(() => true, () => false);
    if (ok) ids.push(name);
  }
  return ids;
}

/** Removes the VM's directory and everything in it, and its API socket if that lives elsewhere. */
export async function removeVmDir(paths: VmPaths): Promise<void> {
  await rm(paths.apiSocket, { force: true });
  await rm(paths.dir, { recursive: true, force: true });
}

async function writeAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await writeFile(`${file}.tmp`, data, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}
