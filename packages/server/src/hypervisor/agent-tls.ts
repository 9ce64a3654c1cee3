import * as https from "node:https";
import * as tls from "node:tls";
import { nodeUri, urisOfSubjectAltName } from "@quantix/core";

/** How the control plane dials enrolled agents: mutual TLS with its client certificate, trusting the cluster CA only. */
export interface AgentDialTls {
  /** The cluster CA (PEM): an agent's server certificate must be one it issued. */
  readonly ca: string;
  /** The control plane's client certificate and key (CONTROL_PLANE_URI). */
  readonly cert: string;
  readonly key: string;
}

/**
 * The server identity check for node `nodeId`'s agent: its certificate must name that node
 * (spiffe://quantix/node/<id>), whatever host or address the endpoint uses. Replaces the
 * host name check: an agent's endpoint is often an IP, and what matters is which node answers.
 */
export function nodeIdentityCheck(nodeId: string): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  const want = nodeUri(nodeId);
  return (_host, cert) => {
    const uris = urisOfSubjectAltName(cert.subjectaltname);
    if (uris.includes(want)) return undefined;
    const err = new Error(`the certificate presented there is not node ${nodeId}'s (it names ${uris.length > 0 ? uris.join(", ") : `no node: ${cert.subject?.CN ?? "no subject"}`})`);
    (err as NodeJS.ErrnoException).code = "ERR_AGENT_IDENTITY";
    return err;
  };
}

/** The TLS options of one connection to node `nodeId`'s agent. */
export function agentTlsOptions(dial: AgentDialTls, nodeId: string): tls.ConnectionOptions {
  return { ca: dial.ca, cert: dial.cert, key: dial.key, checkServerIdentity: nodeIdentityCheck(nodeId) };
}

/** What a TLS handshake with an agent's endpoint showed. */
export type AgentProbe =
  | { readonly kind: "verified" }
  /** Something answered with a certificate that is not the node's (or not of the cluster CA): the endpoint points elsewhere. */
  | { readonly kind: "wrong-identity"; readonly message: string }
  /** Nothing answered (yet): the agent may be starting; calls verify every connection anyway. */
  | { readonly kind: "unreachable"; readonly message: string };

/** Opens one TLS connection to `endpoint` (https://host:port) and says whether node `nodeId`'s agent answered. */
export function probeAgent(endpoint: string, nodeId: string, dial: AgentDialTls, timeoutMs = 3000): Promise<AgentProbe> {
  const u = new URL(endpoint);
  const host = u.hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port: Number(u.port || 443), ...agentTlsOptions(dial, nodeId), ALPNProtocols: ["h2"], ...(isName(host) ? { servername: host } : {}) }, () => {
      socket.destroy();
      resolve({ kind: "verified" });
    });
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      resolve({ kind: "unreachable", message: `no TLS handshake within ${timeoutMs} ms` });
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      socket.destroy();
      // A handshake that failed on the certificate: something else answers there.
      const wrong = err.code === "ERR_AGENT_IDENTITY" || /CERT|SELF_SIGNED|UNABLE_TO|certificate/i.test(`${err.code ?? ""} ${err.message}`);
      resolve(wrong ? { kind: "wrong-identity", message: err.message } : { kind: "unreachable", message: err.message });
    });
  });
}

/** GET <endpoint>/_/health over mutual TLS, verifying the node's identity: the status and the parsed body. */
export function healthOverTls(endpoint: string, nodeId: string, dial: AgentDialTls, timeoutMs = 3000): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${endpoint}/_/health`, { ...agentTlsOptions(dial, nodeId), agent: false, timeout: timeoutMs }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text.length < 65_536 ? (text += d) : undefined));
      res.on("end", () => {
        let body: unknown = {};
        try {
          body = JSON.parse(text);
        } catch {
          body = {};
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

/** Whether a host is a name (SNI carries names only, never addresses). */
function isName(host: string): boolean {
  return !/^[\d.]+$/.test(host) && !host.includes(":");
}
