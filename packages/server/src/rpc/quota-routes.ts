import { clone } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { QuotaLimitsSchema, type Quota, type QuotaLimits } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { QuotaService, type SetQuotaRequest } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { newQuota, notFound, PROJECT_ID_FORMAT, PROJECT_KIND, QUOTA_KIND, QUOTA_RESOURCES, QuantixError, throwIfViolations, Violations, type Clock, type Resource, type Store } from "@quantix/core";
import type { Route } from "@quantix/rpc";
import { MAX_QUOTA_LIMIT } from "../config.js";
import { requireWellFormedId, resourceRoute } from "../resources/index.js";

/**
 * Quantixkvm.quota.v1.QuotaService: GetQuota (a project without a quota object reads as
 * one with nothing used), SetQuota (an administrator's limits), and the generic
 * ListQuotas and WatchQuotas. Use is never written here: the quota ledger keeps it.
 */
export function quotaServiceRoute(store: Store, clock: Clock): Route {
  const quotas = store.of(QUOTA_KIND);
  return resourceRoute(QuotaService, QUOTA_KIND as never, store, {
    impl: {
      getQuota: async (req) => {
        requireWellFormedId("project_id", req.projectId, PROJECT_ID_FORMAT);
        await requireProject(store, req.projectId);
        return (await quotas.get(req.projectId)) ?? { ...newQuota(req.projectId, 0), createdAt: undefined, updatedAt: undefined };
      },
      setQuota: (req) => setQuota(store, clock, req),
    },
  });
}

async function setQuota(store: Store, clock: Clock, req: SetQuotaRequest): Promise<Quota> {
  requireWellFormedId("project_id", req.projectId, PROJECT_ID_FORMAT);
  await requireProject(store, req.projectId);
  const limits = clone(QuotaLimitsSchema, req.limits ?? ({} as QuotaLimits));
  checkLimits(limits);
  const quotas = store.of(QUOTA_KIND);
  for (;;) {
    const cur = await quotas.get(req.projectId);
    if (!cur) {
      if (req.resourceVersion !== 0n) throw new QuantixError("aborted", `the quota of project '${req.projectId}' does not exist yet (resource_version 0), not at ${req.resourceVersion}; read it again and retry`);
      try {
        return await quotas.create({ ...newQuota(req.projectId, clock.now()), limits } as Quota & Resource, { actor: "api" });
      } catch (err) {
        // Created meanwhile (a first VM's charge, or another SetQuota): set the limits on it.
        if (err instanceof QuantixError && err.code === "already_exists") continue;
        throw err;
      }
    }
    return quotas.update(
      req.projectId,
      (q) => {
        q.limits = clone(QuotaLimitsSchema, limits);
        q.updatedAt = timestampFromMs(clock.now());
        return q;
      },
      { expectedVersion: req.resourceVersion, actor: "api" },
    );
  }
}

/** A quota belongs to a project that exists (NOT_FOUND naming it otherwise). */
async function requireProject(store: Store, id: string): Promise<void> {
  if (!(await store.of(PROJECT_KIND).get(id))) throw notFound("project", id);
}

/** Every limit set is -1 (unlimited) or 0 to MAX_QUOTA_LIMIT. */
function checkLimits(limits: QuotaLimits): void {
  const v = new Violations();
  const local: Record<string, keyof QuotaLimits> = { vms: "vms", vcpus: "vcpus", memory_mib: "memoryMib", volumes: "volumes", volume_gib: "volumeGib", networks: "networks", floating_ips: "floatingIps" };
  for (const r of QUOTA_RESOURCES) {
    const x = limits[local[r]!] as bigint | undefined;
    if (x !== undefined && (x < -1n || x > BigInt(MAX_QUOTA_LIMIT))) v.add(`limits.${r}`, "OUT_OF_RANGE", `must be -1 (unlimited) or between 0 and ${MAX_QUOTA_LIMIT}, got ${x}`);
  }
  throwIfViolations(v.list);
}
