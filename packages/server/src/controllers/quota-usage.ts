import { allOf, FLOATING_IP_KIND, newQuota, NO_USAGE, QUOTA_KIND, QuantixError, toQuotaUsage, usageSum, usedOf, VIRTUAL_NETWORK_KIND, VM_KIND, vmUsage, VOLUME_KIND, volumeUsage, type Clock, type Resource, type Store, type Timers, type Usage } from "@quantix/core";
import type { Quota } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Logger } from "@quantix/rpc";
import { Controller } from "../runtime/controller.js";

/** The actor name of the quota usage controller. */
export const QUOTA_USAGE = "quota-usage";

/** The resources this controller recounts (those of kinds that exist: VMs, volumes, virtual networks and floating IPs). */
const COUNTED = ["vms", "vcpus", "memory_mib", "volumes", "volume_gib", "networks", "floating_ips"] as const;

/**
 * The safety net under the quota ledger: every `resyncMs` (and at start), on the leader,
 * each project's VM use is recounted from the VMs that exist and compared with its
 * quota's `used`; a difference (a VM written without the ledger, e.g. by a release
 * older than quotas, or the demo seed) is corrected and logged at warn level. The quota
 * is read before the VMs are counted and written only if it is still at that version,
 * so a charge committed meanwhile makes the pass retry rather than be overwritten. No
 * watch: a recount per change would cost more than the charges it checks.
 */
export function quotaUsageController(deps: { store: Store; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const quotas = deps.store.of(QUOTA_KIND);
  const vms = deps.store.of(VM_KIND);
  const volumes = deps.store.of(VOLUME_KIND);
  const networks = deps.store.of(VIRTUAL_NETWORK_KIND);
  const floatingIps = deps.store.of(FLOATING_IP_KIND);
  return new Controller(
    {
      name: QUOTA_USAGE,
      watches: [],
      keys: async function* () {
        const seen = new Set<string>();
        for await (const o of allOf(quotas)) seen.add(o.id);
        for await (const vm of allOf(vms)) seen.add(vm.projectId);
        for await (const v of allOf(volumes)) seen.add(v.projectId);
        for await (const n of allOf(networks)) seen.add(n.projectId);
        for await (const f of allOf(floatingIps)) seen.add(f.projectId);
        yield* seen;
      },
      reconcile: async (projectId) => {
        const q = await quotas.get(projectId);
        const list: Usage[] = [];
        for await (const vm of allOf(vms, { where: { project_id: projectId } })) list.push(vmUsage(vm));
        for await (const v of allOf(volumes, { where: { project_id: projectId } })) list.push(volumeUsage(v));
        // What networkUsage (services/network-service.ts) charges: one per network.
        for await (const _n of allOf(networks, { where: { project_id: projectId } })) list.push({ ...NO_USAGE, networks: 1 });
        // What floatingIpUsage (services/floating-ip-service.ts) charges: one per floating IP.
        for await (const _f of allOf(floatingIps, { where: { project_id: projectId } })) list.push({ ...NO_USAGE, floating_ips: 1 });
        const actual = usageSum(list);
        const used = usedOf(q);
        const drift = COUNTED.filter((r) => used[r] !== actual[r]);
        if (drift.length === 0) return;
        const fixed = { ...used, ...Object.fromEntries(COUNTED.map((r) => [r, actual[r]])) } as Usage;
        const nowMs = deps.clock.now();
        if (!q) {
          await quotas.create({ ...newQuota(projectId, nowMs), used: toQuotaUsage(fixed) } as Quota & Resource, { actor: QUOTA_USAGE }).catch((err: unknown) => {
            if (!(err instanceof QuantixError && err.code === "already_exists")) throw err;
            throw new QuantixError("aborted", `the quota of project '${projectId}' was created meanwhile; recounting`);
          });
        } else {
          await quotas.update(
            projectId,
            (cur) => {
              cur.used = toQuotaUsage(fixed);
              cur.updatedAt = timestampFromMs(nowMs);
              return cur;
            },
            { expectedVersion: q.resourceVersion, actor: QUOTA_USAGE },
          );
        }
        deps.log.log("warn", "a project's quota use differed from its VMs and was corrected", {
          project_id: projectId,
          ...Object.fromEntries(drift.map((r) => [r, `${used[r]} -> ${actual[r]}`])),
        });
      },
      resyncMs: deps.resyncMs ?? 300_000,
      concurrency: 2,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}
