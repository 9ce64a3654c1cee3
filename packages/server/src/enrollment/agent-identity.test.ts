import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { test } from "node:test";
import { createTestPki } from "@quantix/testing";
import { agentIdentityReader, agentPrincipalFromPeer } from "./agent-identity.js";
import { ClusterCa } from "./cluster-ca.js";

/** A peer as the listener reports it for a verified certificate (the fields the reader uses). */
function peerWith(certPem: string) {
  const x = new X509Certificate(certPem);
  const certificate = { raw: x.raw, fingerprint256: x.fingerprint256, subjectaltname: x.subjectAltName, subject: { CN: /CN=([^\n]+)/.exec(x.subject)?.[1] } } as unknown as PeerCertificate;
  return { address: "127.0.0.1", certificate };
}

// An agent is a certificate the cluster CA itself issued: a certificate of another CA that
// QUANTIX_TLS_CLIENT_CA lets the listener verify names no node, whatever its URI says.
test("only the cluster CA's certificates name an agent; the principal is the node's agent", async () => {
  const dir = await mkdtemp(join(tmpdir(), "quantix-agent-id-"));
  try {
    const pki = await createTestPki();
    await writeFile(join(dir, "ca.crt"), pki.ca.certPem);
    await writeFile(join(dir, "ca.key"), pki.ca.keyPem);
    const read = agentIdentityReader(await ClusterCa.load({ certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") }));
    const ours = await pki.node("node-1");
    assert.deepEqual(read(peerWith(ours.certPem)), { nodeId: "node-1", nodeName: "node-1" });
    const principal = agentPrincipalFromPeer(read, peerWith(ours.certPem));
    assert.deepEqual([principal?.kind, principal?.id, principal?.systemAdmin], ["agent", "node-1", false]);
    const theirs = await (await createTestPki("a client CA")).node("node-1");
    assert.equal(read(peerWith(theirs.certPem)), undefined);
    assert.equal(read(peerWith(pki.controlPlane.certPem)), undefined, "the control plane's certificate names no node");
    assert.equal(read({ address: "127.0.0.1", certificate: undefined }), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("ClusterCa.load refuses a key that is not the certificate's, naming the setting", async () => {
  const dir = await mkdtemp(join(tmpdir(), "quantix-ca-load-"));
  try {
    const [a, b] = [await createTestPki("a"), await createTestPki("b")];
    await writeFile(join(dir, "ca.crt"), a.ca.certPem);
    await writeFile(join(dir, "ca.key"), b.ca.keyPem);
    await assert.rejects(ClusterCa.load({ certFile: join(dir, "ca.crt"), keyFile: join(dir, "ca.key") }), /QUANTIX_CA_KEY: .* is not the key of the CA certificate/);
    await writeFile(join(dir, "leaf.crt"), a.server.certPem);
    await assert.rejects(ClusterCa.load({ certFile: join(dir, "leaf.crt"), keyFile: join(dir, "ca.key") }), /QUANTIX_CA_CERT: .* is not a CA certificate/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
