import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, createContextValues, type UnaryRequest } from "@connectrpc/connect";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { systemClock, type Principal } from "@quantix/core";
import { peerKey, principalKey, silentLogger, toConnectError } from "@quantix/rpc";
import type { PeerCertificate } from "node:tls";
import type { DescMethod } from "@bufbuild/protobuf";
import { MemoryStore } from "../store/memory-store.js";
import { AccessTokens } from "./access-tokens.js";
import { Authenticator } from "./authenticator.js";
import { IdentityIndex } from "./identity-index.js";
import { identityInterceptor } from "./identity-interceptor.js";

// An enrolled agent is a principal by its client certificate (the TLS work supplies the
// mapping): it may make the NodeService calls of its own node, and nothing else.
test("an agent known by its certificate acts for its own node only", async () => {
  const store = new MemoryStore();
  const index = new IdentityIndex(store, silentLogger);
  await index.start();
  const auth = new Authenticator({ index, access: new AccessTokens({ store, index, clock: systemClock, issuer: "c", ttlSec: 60 }), store, clock: systemClock });
  const agent: Principal = { kind: "agent", id: "node-1", name: "host-1", systemAdmin: false, projects: new Map() };
  const certificate = { subject: { CN: "node-1" } } as unknown as PeerCertificate;
  const seen: (Principal | undefined)[] = [];
  const chain = identityInterceptor({ auth, index, store, localTrust: false, log: silentLogger, certificatePrincipal: (peer) => (peer.certificate?.subject.CN === "node-1" ? agent : undefined) })(async (req) => {
    seen.push(req.contextValues.get(principalKey));
    return { stream: false, message: {} } as never;
  });
  const call = (method: DescMethod, message: Record<string, unknown>, withCert = true) =>
    chain({ stream: false, service: NodeService, method, header: new Headers(), contextValues: createContextValues().set(peerKey, { address: "10.0.0.5", certificate: withCert ? certificate : undefined }), message } as unknown as UnaryRequest).then(
      () => 0,
      (e: unknown) => toConnectError(e).code,
    );
  assert.equal(await call(NodeService.method.updateHeartbeat, { id: "node-1" }), 0);
  assert.equal(seen[0], agent);
  assert.equal(await call(NodeService.method.registerNode, { hostname: "host-1", nodeId: "node-1" }), 0);
  assert.equal(await call(NodeService.method.updateHeartbeat, { id: "node-2" }), Code.PermissionDenied);
  assert.equal(await call(NodeService.method.disableNode, { id: "node-1" }), Code.PermissionDenied);
  // Without the certificate (and without local trust), nobody.
  assert.equal(await call(NodeService.method.updateHeartbeat, { id: "node-1" }, false), Code.Unauthenticated);
  index.stop();
});
