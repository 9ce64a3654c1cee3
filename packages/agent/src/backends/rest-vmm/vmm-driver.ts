import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { BackendCapability } from "../../backend.js";
import type { UnixHttpClient } from "./unix-http-client.js";
import type { VmPaths } from "./vm-dir.js";

/**
 * Where a freshly started VMM finds the VM's host files: the descriptors the agent opened
 * and checked (host-files.ts), which the VMM inherited, named `/proc/self/fd/N` (in the
 * VMM's process that is the inherited file itself, whatever its name now leads to).
 */
export interface VmmFiles {
  readonly kernel: string | undefined;
  readonly initrd: string | undefined;
  /** Parallel to config.storage; `qcow2` read by the agent from its own descriptor. */
  readonly disks: readonly { readonly path: string; readonly qcow2: boolean }[];
}

/** What the guest is doing, as the VMM's API reports it. */
export type ObservedGuest = "running" | "paused" | "stopped";

/**
 * The part of a REST-over-unix-socket VMM backend that differs per VMM (Firecracker,
 * Cloud Hypervisor): command line, config mapping and API calls. Process, state dir,
 * exit detection and console live in {@link RestVmmBackend}.
 */
export interface VmmDriver {
  /** Backend.type. */
  readonly type: string;
  readonly capabilities: ReadonlySet<BackendCapability>;
  /** FAILED_PRECONDITION naming what `config` needs that this VMM lacks. */
  checkConfig(config: VmConfig): void;
  /** The binary's arguments for one VM's process. */
  args(vmId: string, paths: VmPaths): string[];
  /** Configures the guest in a freshly started VMM, with its host files as `files` says, and boots it. */
  boot(api: UnixHttpClient, config: VmConfig, paths: VmPaths, files: VmmFiles): Promise<void>;
  /** Asks the guest to power off; the VMM process exits once it has. */
  requestPowerOff(api: UnixHttpClient): Promise<void>;
  /**
   * Stops the VMM through its API at once, if its API can; resolves to whether it asked.
   * The caller kills the process afterwards if it is still there.
   */
  stopNow(api: UnixHttpClient): Promise<boolean>;
  /** Resolves once the API answers (used while the process starts). */
  ping(api: UnixHttpClient): Promise<void>;
  pause(api: UnixHttpClient): Promise<void>;
  resume(api: UnixHttpClient): Promise<void>;
  /** Restarts the guest in the same process (only with the "reboot" capability). */
  reboot(api: UnixHttpClient, force: boolean): Promise<void>;
  observe(api: UnixHttpClient): Promise<ObservedGuest>;
  /** Parses the output of `binary --version`. */
  parseVersion(output: string): string;
}
