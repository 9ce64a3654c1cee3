import type { Logger } from "@quantix/rpc";
import type { ControlPlaneConfig } from "../config.js";

/** How often an insecure control plane repeats its warning (a log read hours after the start still shows it). */
export const INSECURE_WARNING_EVERY_MS = 10 * 60_000;

/**
 * Says at start how callers are trusted: local trust mode (loopback, no TLS), TLS, or
 * insecure (a non-loopback address without TLS, QUANTIX_INSECURE=1), which is logged at
 * warn level at start and every ten minutes. Returns what stops the repetition.
 */
export function announceSecurityMode(config: ControlPlaneConfig, url: string, log: Logger): () => void {
  if (config.tls) {
    log.log("info", "serving TLS", { url, client_certificates: config.ca || config.tls.clientCaFile ? "verified when presented" : "not asked for", agent_enrollment: config.ca !== undefined });
    return () => undefined;
  }
  if (config.localTrust) {
    log.log("info", "local trust mode: loopback address without TLS; calls without a token act as the system admin (this machine's operator), calls with a token are authenticated, agents register without certificates; QUANTIX_LOCAL_TRUST=0 requires tokens", { url });
    return () => undefined;
  }
  const warn = () =>
    log.log("warn", "INSECURE: the API is served without TLS on a non-loopback address (QUANTIX_INSECURE=1): credentials and data cross the network in clear text and agents are not authenticated; set QUANTIX_TLS_CERT and QUANTIX_TLS_KEY", { url, host: config.host });
  warn();
  const timer = setInterval(warn, INSECURE_WARNING_EVERY_MS);
  timer.unref();
  return () => clearInterval(timer);
}
