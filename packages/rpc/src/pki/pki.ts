// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

// The cluster CA's certificates (issue 12), with @peculiar/x509 over Node's WebCrypto:
// ECDSA P-256 keys, SHA-256 signatures. Pure computation on PEM text: writing files is the
// caller's (the `quantix ca` command, the agent's enrollment).

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/** A certificate and its private key, both PEM. */
export interface KeyAndCert {
  readonly certPem: string;
  readonly keyPem: string;
}

/** What a certificate names and may be used for. */
export interface CertificateSubject {
  /** The subject's common name (for people reading it; identity is in the SANs). */
  readonly commonName: string;
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
  /** "server": TLS server authentication; "client": TLS client authentication. */
  readonly usages: readonly ("server" | "client")[];
  /** How long it is valid, from now (less one hour of clock skew before). */
  readonly validityDays: number;
}

/** Creates a cluster CA: a self-signed ECDSA P-256 certificate that may sign leaf certificates only. */
export async function createClusterCa(commonName: string, validityDays: number, now = new Date()): Promise<KeyAndCert> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: dn(commonName),
    notBefore: new Date(now.getTime() - 3_600_000),
    notAfter: new Date(now.getTime() + validityDays * DAY_MS),
    keys,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await keyToPem(keys.privateKey) };
}

/** Issues a certificate with a new key pair (the key is in the answer: for the control plane's own certificates). */
export async function issueWithNewKey(ca: KeyAndCert, subject: CertificateSubject, now = new Date()): Promise<KeyAndCert> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  return { certPem: await sign(ca, keys.publicKey, subject, now), keyPem: await keyToPem(keys.privateKey) };
}

/**
 * Issues a certificate for the public key of a PKCS #10 request (PEM) whose signature
 * proves the requester holds the key. What it names comes from `subject`, never from the
 * request. Throws a plain Error saying what is wrong with the request.
 */
export async function issueForCsr(ca: KeyAndCert, csrPem: string, subject: CertificateSubject, now = new Date()): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new Error("is not a PEM certificate signing request (PKCS #10)");
  }
  const alg = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  if (alg.name !== "ECDSA" || alg.namedCurve !== "P-256") throw new Error(`must carry an ECDSA P-256 public key, not ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ""}`);
  if (!(await csr.verify().catch(() => false))) throw new Error("is not signed by the key it carries");
  return sign(ca, await csr.publicKey.export(EC, ["verify"]), subject, now);
}

/** A new ECDSA P-256 key pair and a certificate signing request for it (the agent's enrollment: the key never leaves the host). */
export async function createCsr(commonName: string): Promise<{ readonly csrPem: string; readonly keyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: dn(commonName), keys, signingAlgorithm: SIGN });
  return { csrPem: csr.toString("pem"), keyPem: await keyToPem(keys.privateKey) };
}

/** The subject alternative names of a PEM certificate, for checks and messages. */
export function certificateInfo(certPem: string): { readonly subject: string; readonly uris: string[]; readonly dnsNames: string[]; readonly notAfter: Date; readonly isCa: boolean } {
  const cert = new x509.X509Certificate(certPem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const names = san?.names.toJSON() ?? [];
  return {
    subject: cert.subject,
    uris: names.filter((n) => n.type === "url").map((n) => n.value),
    dnsNames: names.filter((n) => n.type === "dns").map((n) => n.value),
    notAfter: cert.notAfter,
    isCa: cert.getExtension(x509.BasicConstraintsExtension)?.ca === true,
  };
}

async function sign(ca: KeyAndCert, publicKey: CryptoKey, s: CertificateSubject, now: Date): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(ca.keyPem), EC, false, ["sign"]);
  const names: x509.JsonGeneralName[] = [
    ...(s.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(s.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
    ...(s.uris ?? []).map((value) => ({ type: "url" as const, value })),
  ];
  const usages = s.usages.map((u) => (u === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: dn(s.commonName),
    issuer: caCert.subjectName,
    notBefore: new Date(now.getTime() - 3_600_000),
    // Never past the CA's own expiry: a chain is only as valid as its CA.
    notAfter: new Date(Math.min(now.getTime() + s.validityDays * DAY_MS, caCert.notAfter.getTime())),
    publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usages, false),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, false)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return cert.toString("pem");
}

/** A distinguished name of one CN, escaped (x509's string form would read a comma or '=' in it as syntax). */
function dn(commonName: string): x509.JsonName {
  return [{ CN: [commonName] }];
}

/** A positive random 128-bit serial number (hex), as RFC 5280 §4.1.2.2 allows. */
function serial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x01;
  return Buffer.from(b).toString("hex");
}

async function keyToPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}
