import { X509Certificate } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { EnrollmentService } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { nodeIdOfSubjectAltName, QuantixError } from "@quantix/core";
import { createCsr } from "@quantix/rpc";

/** An enrolled agent's TLS material, as kept in `<stateDir>/tls/`. */
export interface AgentTls {
  /** The agent's certificate (PEM): TLS client and server, naming its node. */
  readonly certPem: string;
  /** Its private key (PEM), generated on this host at enrollment; never sent anywhere. */
  readonly keyPem: string;
  /** The cluster CA (PEM): verifies the control plane. */
  readonly caPem: string;
  /** The node the certificate names. */
  readonly nodeId: string;
}

/** The files of an enrollment, under the state directory. */
export const TLS_DIR = "tls";
const FILES = { key: "node.key", cert: "node.crt", ca: "ca.crt" } as const;

/** The enrollment kept in `stateDir`, or undefined when this agent has not enrolled. */
export async function loadEnrollment(stateDir: string): Promise<AgentTls | undefined> {
  const dir = join(stateDir, TLS_DIR);
  const read = (f: string) => readFile(join(dir, f), "utf8").catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? undefined : Promise.reject(err)));
  const [keyPem, certPem, caPem] = await Promise.all([read(FILES.key), read(FILES.cert), read(FILES.ca)]);
  if (keyPem === undefined && certPem === undefined && caPem === undefined) return undefined;
  if (keyPem === undefined || certPem === undefined || caPem === undefined) {
    throw new QuantixError("failed_precondition", `${dir} holds part of an enrollment (${FILES.key}, ${FILES.cert} and ${FILES.ca} go together): remove the directory and enroll again`);
  }
  const nodeId = nodeIdOfSubjectAltName(new X509Certificate(certPem).subjectAltName);
  if (nodeId === undefined) throw new QuantixError("failed_precondition", `${join(dir, FILES.cert)} names no node: remove ${dir} and enroll again`);
  return { certPem, keyPem, caPem, nodeId };
}

/** What enrollment needs. */
export interface EnrollOptions {
  /** The control plane's base URL (https). */
  readonly url: string;
  readonly joinToken: string;
  /** The cluster CA certificate (PEM) that verifies the control plane's server certificate. */
  readonly caPem: string;
  readonly nodeName: string;
  readonly stateDir: string;
}

/**
 * Enrolls this agent: generates its key pair here, sends a certificate signing request with
 * the join token to the control plane's Enroll (verified with the given CA), and keeps the
 * key (0600), the certificate and the CA under `<stateDir>/tls/`, and the node id in
 * `<stateDir>/node-id`. Refusals are thrown as QuantixError with the control plane's words.
 */
export async function enroll(o: EnrollOptions): Promise<AgentTls> {
  const { csrPem, keyPem } = await createCsr(o.nodeName);
  const client = createClient(EnrollmentService, createConnectTransport({ baseUrl: o.url, httpVersion: "1.1", nodeOptions: { ca: o.caPem } }));
  let res;
  try {
    res = await client.enroll({ joinToken: o.joinToken, csrPem }, { timeoutMs: 30_000 });
  } catch (err) {
    const ce = ConnectError.from(err);
    throw new QuantixError("failed_precondition", `enrollment with ${o.url} failed: ${ce.rawMessage}${ce.cause instanceof Error && /certificate/i.test(ce.cause.message) ? ` (${ce.cause.message}: is --ca-cert the cluster CA that signed the control plane's certificate?)` : ""}`);
  }
  if (res.nodeName !== o.nodeName) throw new QuantixError("failed_precondition", `the join token enrolls node '${res.nodeName}', not '${o.nodeName}': start the agent with QUANTIX_NODE_NAME=${res.nodeName} (or --node-name)`);
  const dir = join(o.stateDir, TLS_DIR);
  const tmp = `${dir}.new`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true, mode: 0o700 });
  await writeNew(join(tmp, FILES.key), keyPem, 0o600);
  await writeNew(join(tmp, FILES.cert), res.certificatePem, 0o644);
  await writeNew(join(tmp, FILES.ca), res.caCertificatePem, 0o644);
  // The whole enrollment appears at once: a crash leaves none or all of it.
  await rename(tmp, dir);
  await writeNew(join(o.stateDir, "node-id.tmp"), `${res.nodeId}\n`, 0o600, true);
  await rename(join(o.stateDir, "node-id.tmp"), join(o.stateDir, "node-id"));
  return { certPem: res.certificatePem, keyPem, caPem: res.caCertificatePem, nodeId: res.nodeId };
}

async function writeNew(path: string, text: string, mode: number, replace = false): Promise<void> {
  const h = await open(path, replace ? "w" : "wx", mode);
  try {
    await h.writeFile(text);
    await h.sync();
  } finally {
    await h.close();
  }
}
