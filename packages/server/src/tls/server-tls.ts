import { readFile } from "node:fs/promises";
import { QuantixError } from "@quantix/core";
import type { ListenerTls } from "@quantix/rpc";
import type { ControlPlaneConfig } from "../config.js";

/**
 * The API listener's TLS from the configured files: the server certificate, and client
 * certificates verified against the cluster CA (enrolled agents) and QUANTIX_TLS_CLIENT_CA,
 * optional (users call with tokens; who a certificate names is the caller's principal).
 * Undefined without TLS. A file that cannot be read names its setting.
 */
export async function loadServerTls(config: ControlPlaneConfig): Promise<ListenerTls | undefined> {
  const t = config.tls;
  if (!t) return undefined;
  const cert = await pem(t.certFile, "QUANTIX_TLS_CERT");
  const key = await pem(t.keyFile, "QUANTIX_TLS_KEY");
  const cas = [
    ...(config.ca ? [await pem(config.ca.certFile, "QUANTIX_CA_CERT")] : []),
    ...(t.clientCaFile ? [await pem(t.clientCaFile, "QUANTIX_TLS_CLIENT_CA")] : []),
  ];
  return { cert, key, ...(cas.length > 0 ? { clientCa: cas.join("\n"), clientCert: "optional" as const } : {}) };
}

/** Reads a PEM file a setting names; a failure says which setting. */
export async function pem(file: string, setting: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new QuantixError("failed_precondition", `${setting}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}
