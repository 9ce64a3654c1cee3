import { X509Certificate } from "node:crypto";
import { CONTROL_PLANE_URI, QuantixError, nodeUri } from "@quantix/core";
import { certificateInfo, issueForCsr, issueWithNewKey, type KeyAndCert } from "@quantix/rpc";
import type { CaFiles } from "../config.js";
import { pem } from "../tls/server-tls.js";

/** How long an agent's certificate is valid. */
export const NODE_CERT_DAYS = 365;
/** How long the control plane's own client certificate is valid (it makes a new one at every start). */
const CONTROL_PLANE_CERT_DAYS = 30;

/**
 * The cluster CA as the control plane holds it (QUANTIX_CA_CERT, QUANTIX_CA_KEY): it signs
 * agents' certificates at enrollment and, at start, the control plane's own client
 * certificate (CONTROL_PLANE_URI) that agents require on every vmm.v1 call.
 */
export class ClusterCa {
  /** The CA certificate, for Node's verification of certificates it issued. */
  readonly x509: X509Certificate;
  private client: Promise<KeyAndCert> | undefined;

  private constructor(private readonly ca: KeyAndCert) {
    this.x509 = new X509Certificate(ca.certPem);
  }

  get certPem(): string {
    return this.ca.certPem;
  }

  /** Reads and checks the CA files: a CA certificate, and a key that signs what it verifies. */
  static async load(files: CaFiles): Promise<ClusterCa> {
    const ca = { certPem: await pem(files.certFile, "QUANTIX_CA_CERT"), keyPem: await pem(files.keyFile, "QUANTIX_CA_KEY") };
    let info;
    try {
      info = certificateInfo(ca.certPem);
    } catch {
      throw new QuantixError("failed_precondition", `QUANTIX_CA_CERT: ${files.certFile} is not a PEM certificate`);
    }
    if (!info.isCa) throw new QuantixError("failed_precondition", `QUANTIX_CA_CERT: ${files.certFile} is not a CA certificate (create one with quantix ca init)`);
    const self = new ClusterCa(ca);
    // The key must be the certificate's: a certificate signed with the wrong key verifies nowhere.
    const probe = await self.controlPlaneClient().catch((err: unknown) => {
      throw new QuantixError("failed_precondition", `QUANTIX_CA_KEY: ${files.keyFile} is not an ECDSA P-256 private key in PEM (PKCS #8): ${err instanceof Error ? err.message : String(err)}`);
    });
    if (!self.issued(new X509Certificate(probe.certPem))) throw new QuantixError("failed_precondition", `QUANTIX_CA_KEY: ${files.keyFile} is not the key of the CA certificate ${files.certFile}`);
    return self;
  }

  /** The control plane's client certificate and key for calling agents (made once per process). */
  controlPlaneClient(): Promise<KeyAndCert> {
    this.client ??= issueWithNewKey(this.ca, { commonName: "Quantix control plane", uris: [CONTROL_PLANE_URI], usages: ["client"], validityDays: CONTROL_PLANE_CERT_DAYS });
    return this.client;
  }

  /** An agent's certificate (TLS client and server) for the key of `csrPem`, naming node `nodeId`. Throws INVALID_ARGUMENT on csr_pem for a bad request. */
  async issueNode(csrPem: string, nodeId: string, nodeName: string): Promise<{ certPem: string; notAfter: Date }> {
    try {
      const certPem = await issueForCsr(this.ca, csrPem, { commonName: nodeName, dnsNames: [nodeName], uris: [nodeUri(nodeId)], usages: ["server", "client"], validityDays: NODE_CERT_DAYS });
      return { certPem, notAfter: certificateInfo(certPem).notAfter };
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new QuantixError("invalid_argument", `invalid request: csr_pem: ${why}`, [{ field: "csr_pem", description: why, reason: "INVALID_FORMAT" }]);
    }
  }

  /** Whether this CA issued `cert` (its signature verifies with the CA's key and names the CA as issuer). */
  issued(cert: X509Certificate): boolean {
    return cert.checkIssued(this.x509) && cert.verify(this.x509.publicKey);
  }
}
