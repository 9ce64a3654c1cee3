import { mkdir, readFile } from "node:fs/promises";
import { replacePrivateFile } from "../private-file.js";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import type { Logger } from "@quantix/rpc";
import type { Backend } from "../backend.js";
import type { AgentTls } from "../enroll/enrollment.js";
import { AGENT_VERSION } from "../rpc/health.js";
import { readCpuTimes, readHostFacts, readUsage, type CpuTimes } from "./host-facts.js";
import { SelfFence, type FenceTarget } from "./self-fence.js";

/** How the agent reaches its control plane. */
export interface ControlPlaneLinkOptions {
  /** Base URL, e.g. http://127.0.0.1:8080. */
  readonly controlPlane: string;
  /** The agent's own base URL, registered as the node's agent_endpoint. */
  readonly agentUrl: string;
  readonly nodeName: string;
  /** The node id is kept in `<stateDir>/node-id`. */
  readonly stateDir: string;
  readonly backend: Backend;
  readonly log: Logger;
  /** First retry delay after a failure; doubles up to maxBackoffMs. */
  readonly backoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Tests: heartbeat this often instead of the interval the control plane names. */
  readonly heartbeatMs?: number;
  /** The agent's VMs, for self-fencing (self-fence.ts); absent: no self-fencing. */
  readonly fenceTarget?: FenceTarget;
  /** How often self-fencing checks the deadline (default 1000 ms). */
  readonly fenceCheckMs?: number;
  /**
   * Called once when the control plane refuses this agent for good (another live agent
   * serves the node by this name); the link has stopped. The agent process exits with the
   * message (main.ts). Absent: the refusal is only logged and reported in problem().
   */
  readonly onRefused?: (message: string) => void;
  /** An enrolled agent's certificate: its calls present it, and the control plane is verified with its CA. */
  readonly tls?: AgentTls;
  /** The node's storage and network capabilities (`storage-pool-<type>`, `network-vxlan`, ...), registered with the backend's; probed at each registration. */
  readonly storageCapabilities?: () => Promise<readonly string[]>;
}

/** A running link. */
export interface ControlPlaneLink {
  /** The node id the control plane gave this host, once registered. */
  nodeId(): string | undefined;
  /** Why this agent does not serve as a node (it was decommissioned, or another agent serves the node), or undefined; /_/health reports it. */
  problem(): string | undefined;
  /** Stops heartbeating (the node goes OFFLINE on the control plane's own schedule). */
  stop(): Promise<void>;
}

/** How long one heartbeat may take before it counts as failed. */
const HEARTBEAT_TIMEOUT_MS = 10_000;

const ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

/**
 * Registers this host with the control plane, then heartbeats with real usage at the
 * interval the control plane names. A node id once registered (kept in `<stateDir>/node-id`)
 * is sent with every registration; a heartbeat the control plane answers NOT_FOUND (the
 * node is gone) registers again. A control plane that never knew the id (its database was
 * replaced) registers the host as a new node, and the agent keeps the new id. One that
 * answers NOT_FOUND to the registration decommissioned the node (it keeps a tombstone):
 * the agent does not register again (its host would come back as a new schedulable node), stops
 * heartbeating and self-fencing, logs an error and reports it in problem(); removing the
 * node-id file and restarting registers it afresh. A registration refused because another
 * live agent serves the node by this name (ALREADY_EXISTS) stops the link and calls
 * onRefused: the agent exits saying so. An unreachable control plane is
 * retried with exponential backoff and logged once per attempt. With a fence target, the
 * agent powers off its HA VMs when heartbeats have failed for nearly the control plane's
 * lost-after time (self-fence.ts).
 */
export function startControlPlaneLink(o: ControlPlaneLinkOptions): ControlPlaneLink {
  const nodeOptions = o.tls ? { nodeOptions: { ca: o.tls.caPem, cert: o.tls.certPem, key: o.tls.keyPem } } : {};
  const client = createClient(NodeService, createConnectTransport({ baseUrl: o.controlPlane, httpVersion: "1.1", ...nodeOptions }));
  const idFile = join(o.stateDir, "node-id");
  const stopping = new AbortController();
  let nodeId: string | undefined;
  let cpuBefore: CpuTimes | undefined;
  let decommissioned: string | undefined;
  const fence = o.fenceTarget ? new SelfFence({ target: o.fenceTarget, stateDir: o.stateDir, log: o.log, ...(o.fenceCheckMs ? { checkMs: o.fenceCheckMs } : {}) }) : undefined;

  const register = async (): Promise<void> => {
    const facts = await readHostFacts(o.stateDir);
    const node = await client.registerNode(
      {
        hostname: o.nodeName,
        managementIp: facts.managementIp,
        agentEndpoint: o.agentUrl,
        cpuInfo: facts.cpu,
        memoryInfo: facts.memory,
        storageDevices: facts.storage,
        networkDevices: facts.network,
        hypervisor: { type: o.backend.type, version: await o.backend.version(), capabilities: [...o.backend.capabilities, ...((await o.storageCapabilities?.()) ?? [])].sort() },
        agentVersion: AGENT_VERSION,
        // The id it had: a node decommissioned meanwhile answers NOT_FOUND instead of coming back new.
        nodeId: nodeId ?? "",
      },
      { signal: stopping.signal },
    );
    if (nodeId !== undefined && nodeId !== node.id) o.log.log("warn", "the control plane gave this host a new node id", { previous: nodeId, node_id: node.id });
    nodeId = node.id;
    await mkdir(o.stateDir, { recursive: true });
    await replacePrivateFile(idFile, `${node.id}\n`);
    o.log.log("info", "registered with the control plane", { control_plane: o.controlPlane, node_id: node.id, hostname: o.nodeName });
  };

  const heartbeat = async (): Promise<number> => {
    const now = await readCpuTimes();
    const usage = await readUsage(cpuBefore, now);
    cpuBefore = now;
    const health = await o.backend.ping().then(() => undefined, (err: unknown) => (err instanceof Error ? err.message : String(err)));
    const res = await client.updateHeartbeat(
      { id: nodeId!, usage, conditions: [health === undefined ? { type: "Ready", status: 1, reason: "HypervisorUp", message: `${o.backend.type} answers` } : { type: "Ready", status: 2, reason: "HypervisorDown", message: health }] },
      // A heartbeat that hangs (a partition dropping packets) fails like any other.
      { signal: stopping.signal, timeoutMs: HEARTBEAT_TIMEOUT_MS },
    );
    await fence?.answered(res.nodeLostAfterSec);
    return o.heartbeatMs ?? Math.max(1, res.heartbeatIntervalSec) * 1000;
  };

  const loop = async () => {
    // The first heartbeat's CPU percent then covers the time since the link started,
    // instead of being a made-up 0 (with no time between samples it is reported unmeasured).
    cpuBefore = await readCpuTimes();
    await fence?.start();
    const stored = (await readFile(idFile, "utf8").catch(() => "")).trim();
    if (ID.test(stored)) nodeId = stored;
    let registered = false;
    let failures = 0;
    while (!stopping.signal.aborted) {
      let waitMs: number;
      try {
        if (!registered) {
          await register();
          registered = true;
        }
        waitMs = await heartbeat();
        if (failures > 0) o.log.log("info", "control plane reachable again", { control_plane: o.controlPlane, after_failures: failures });
        failures = 0;
      } catch (err) {
        if (stopping.signal.aborted) break;
        const ce = ConnectError.from(err);
        if (ce.code === Code.AlreadyExists && !registered) {
          decommissioned = `the control plane refused this agent: ${ce.rawMessage}`;
          o.log.log("error", decommissioned, { node: o.nodeName, control_plane: o.controlPlane });
          fence?.stop();
          o.onRefused?.(decommissioned);
          break;
        }
        if (ce.code === Code.NotFound && nodeId !== undefined && registered) {
          // The node is gone (decommissioned, or this control plane's database was replaced):
          // registering again tells the two apart (a decommissioned node left a tombstone).
          o.log.log("warn", "the control plane no longer knows this node; registering again", { node_id: nodeId, control_plane: o.controlPlane });
          registered = false;
          continue;
        }
        if (ce.code === Code.NotFound && nodeId !== undefined) {
          decommissioned = `this node was decommissioned; remove ${idFile} and restart the agent to register it again`;
          o.log.log("error", decommissioned, { node_id: nodeId, control_plane: o.controlPlane });
          fence?.stop();
          break;
        }
        failures++;
        waitMs = Math.min(o.maxBackoffMs ?? 30_000, (o.backoffMs ?? 500) * 2 ** Math.min(failures - 1, 16));
        o.log.log("warn", "control plane unreachable or refusing", { control_plane: o.controlPlane, code: Code[ce.code], error: ce.rawMessage, attempt: failures, retry_in_ms: waitMs });
      }
      await sleep(waitMs, stopping.signal);
    }
  };
  const running = loop();
  return {
    nodeId: () => nodeId,
    problem: () => decommissioned,
    async stop() {
      stopping.abort();
      await running;
      fence?.stop();
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
