import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { withLeanUnary } from "@quantix/rpc";
import { agentTlsOptions, healthOverTls, type AgentDialTls } from "./agent-tls.js";

/** What an agent's health report says, as far as the control plane reads it. */
export interface AgentHealth {
  /** Whether the agent's hypervisor answers (GET /_/health answered 200). */
  readonly ok: boolean;
  /** The backend's capabilities, when the report names them. */
  readonly capabilities?: readonly string[];
  /** Why it is not ok, in the agent's words. */
  readonly detail: string;
}

/**
 * How the control plane reaches one host agent: vmm.v1 over a transport, and the agent's
 * health report. Over the network for a registered agent ({@link httpAgentConnection});
 * in memory for an agent in this process (the demo's simulated hosts).
 */
export interface AgentConnection {
  /** Where the agent is: its agent_endpoint URL, or a name for an agent in this process. */
  readonly endpoint: string;
  /** Carries vmm.v1 VmService calls to the agent. */
  readonly transport: Transport;
  /** The agent's health report; rejects when the agent cannot be reached. */
  health(): Promise<AgentHealth>;
  /** Drops the connection; the agent and its VMs carry on. */
  close(): void;
}

/**
 * An agent's GET /_/health answer (`status`, parsed JSON `body`) as {@link AgentHealth}:
 * the one reading of the report, whichever way it arrived.
 */
export function healthOf(status: number, body: unknown): AgentHealth {
  const b = (body ?? {}) as { backend?: { capabilities?: string[] }; ping?: { detail?: string }; reason?: string };
  const capabilities = b.backend?.capabilities;
  return { ok: status === 200, ...(capabilities ? { capabilities } : {}), detail: b.ping?.detail ?? b.reason ?? `HTTP ${status}` };
}

/**
 * A registered agent at its agent_endpoint: gRPC over HTTP/2, health over GET /_/health.
 * Cleartext, or with `secure` (an enrolled agent) mutual TLS where every connection checks
 * that the agent's certificate names node `secure.nodeId`.
 */
export function httpAgentConnection(endpoint: string, secure?: { readonly dial: AgentDialTls; readonly nodeId: string }): AgentConnection {
  // Pings find a half-open connection (a host that vanished) within seconds.
  const sessions = new Http2SessionManager(endpoint, { pingIntervalMs: 5000, pingTimeoutMs: 3000, idleConnectionTimeoutMs: 60_000 }, secure ? agentTlsOptions(secure.dial, secure.nodeId) : undefined);
  return {
    endpoint,
    // Unary calls (BootVm, GetVmInfo, ...) go straight onto the session; streams through connect-node (ADR 0013).
    transport: withLeanUnary(createGrpcTransport({ baseUrl: endpoint, sessionManager: sessions }), sessions),
    async health() {
      if (secure) {
        const r = await healthOverTls(endpoint, secure.nodeId, secure.dial);
        return healthOf(r.status, r.body);
      }
      const res = await fetch(`${endpoint}/_/health`, { signal: AbortSignal.timeout(3000) });
      return healthOf(res.status, await res.json().catch(() => ({})));
    },
    close: () => sessions.abort(),
  };
}

/** An agent running in this process, reached without a network. */
export interface InProcessAgent {
  /** vmm.v1 served in memory, through the agent's own interceptors. */
  readonly transport: Transport;
  /** What the agent's GET /_/health would answer. */
  health(): Promise<{ readonly status: number; readonly body: unknown }>;
}

/** A connection to an agent in this process; `name` stands for its endpoint in messages. */
export function inProcessConnection(name: string, agent: InProcessAgent): AgentConnection {
  return {
    endpoint: `in-process:${name}`,
    transport: agent.transport,
    async health() {
      const r = await agent.health();
      return healthOf(r.status, r.body);
    },
    close: () => undefined,
  };
}
