import type { Interceptor } from "@connectrpc/connect";
import { randomIds, type Clock, type Store } from "@quantix/core";
import { rateLimit, type Logger } from "@quantix/rpc";
import { auditCalls, projectResolver } from "../audit/audit-interceptor.js";
import type { AuditWriter } from "../audit/audit-writer.js";
import type { ControlPlaneConfig } from "../config.js";
import { identityInterceptor, type IdentityInterceptorDeps } from "../identity/identity-interceptor.js";

/**
 * The chain of ours every API call runs, in the control plane and in `quantix gateway`
 * alike: the audit trail outermost (every mutating call is recorded, refused ones too),
 * then authentication, the rate limit per caller (keyed by who the caller is), and policy.
 */
export function apiInterceptors(o: {
  readonly config: Pick<ControlPlaneConfig, "localTrust" | "rateLimitRps" | "rateLimitBurst">;
  readonly store: Store;
  readonly audit: AuditWriter;
  readonly clock: Clock;
  readonly log: Logger;
  readonly auth: IdentityInterceptorDeps["auth"];
  readonly index: IdentityInterceptorDeps["index"];
  readonly certificatePrincipal?: IdentityInterceptorDeps["certificatePrincipal"];
}): Interceptor[] {
  return [
    // Record and request ids are random whatever the caller's id generator is (a test's ids stay the resources').
    auditCalls({ sink: o.audit, clock: o.clock, ids: randomIds, projectOf: projectResolver(o.store) }),
    identityInterceptor({
      auth: o.auth,
      index: o.index,
      store: o.store,
      localTrust: o.config.localTrust,
      log: o.log,
      ...(o.certificatePrincipal ? { certificatePrincipal: o.certificatePrincipal } : {}),
      ...(o.config.rateLimitRps > 0 ? { rateLimit: rateLimit({ rps: o.config.rateLimitRps, burst: o.config.rateLimitBurst }) } : {}),
    }),
  ];
}
