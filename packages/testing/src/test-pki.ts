import { CONTROL_PLANE_URI, nodeUri } from "@quantix/core";
import { createClusterCa, issueWithNewKey, type KeyAndCert } from "@quantix/rpc";

/** A cluster CA for tests, and certificates it issued. */
export interface TestPki {
  readonly ca: KeyAndCert;
  /** A server certificate for 127.0.0.1, ::1 and localhost. */
  readonly server: KeyAndCert;
  /** The control plane's client certificate (CONTROL_PLANE_URI). */
  readonly controlPlane: KeyAndCert;
  /** A client certificate of this CA for node `nodeId`'s agent (client and server usage). */
  node(nodeId: string): Promise<KeyAndCert>;
}

/** A fresh CA and its certificates (ECDSA P-256, one day). */
export async function createTestPki(name = "test cluster CA"): Promise<TestPki> {
  const ca = await createClusterCa(name, 1);
  const server = await issueWithNewKey(ca, { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1", "::1"], usages: ["server"], validityDays: 1 });
  const controlPlane = await issueWithNewKey(ca, { commonName: "control plane", uris: [CONTROL_PLANE_URI], usages: ["client"], validityDays: 1 });
  return {
    ca,
    server,
    controlPlane,
    node: (nodeId) => issueWithNewKey(ca, { commonName: nodeId, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], uris: [nodeUri(nodeId)], usages: ["server", "client"], validityDays: 1 }),
  };
}
