import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuotaSchema, QuotaUsageSchema, type Quota, type QuotaLimits, type QuotaUsage } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { QuantixError } from "../errors.js";
import { demandOf } from "../scheduler/cluster.js";

/** The resources a quota counts, by their proto field names. */
export const QUOTA_RESOURCES = ["vms", "vcpus", "memory_mib", "volumes", "volume_gib", "networks", "floating_ips"] as const;

/** One resource a quota counts. */
export type QuotaResource = (typeof QUOTA_RESOURCES)[number];

/** Amounts of every quota resource (a use, or a change of use). */
export type Usage = Readonly<Record<QuotaResource, number>>;

/** Limits by resource: a number (-1 unlimited), or absent (the next default applies). */
export type Limits = Readonly<Partial<Record<QuotaResource, number>>>;

const LOCAL: Record<QuotaResource, keyof QuotaUsage & keyof QuotaLimits> = {
  vms: "vms",
  vcpus: "vcpus",
  memory_mib: "memoryMib",
  volumes: "volumes",
  volume_gib: "volumeGib",
  networks: "networks",
  floating_ips: "floatingIps",
};

/** Nothing used. */
export const NO_USAGE: Usage = Object.freeze(Object.fromEntries(QUOTA_RESOURCES.map((r) => [r, 0])) as Record<QuotaResource, number>);

/** What a VM counts against its project's quota (it counts until it is finally removed). */
export function vmUsage(vm: VirtualMachine | undefined): Usage {
  if (!vm) return NO_USAGE;
  const d = demandOf(vm.spec);
  return { ...NO_USAGE, vms: 1, vcpus: d.vcpus, memory_mib: d.memoryMib };
}

/** What a volume counts against its project's quota: one volume and its size, until it is finally removed. */
export function volumeUsage(v: { spec?: { sizeGib: bigint } | undefined } | undefined): Usage {
  if (!v) return NO_USAGE;
  return { ...NO_USAGE, volumes: 1, volume_gib: Number(v.spec?.sizeGib ?? 0n) };
}

/** `a - b`, per resource. */
export function usageDelta(after: Usage, before: Usage): Usage {
  return Object.fromEntries(QUOTA_RESOURCES.map((r) => [r, after[r] - before[r]])) as Record<QuotaResource, number>;
}

/** The sum of several uses. */
export function usageSum(list: Iterable<Usage>): Usage {
  const out = { ...NO_USAGE } as Record<QuotaResource, number>;
  for (const u of list) for (const r of QUOTA_RESOURCES) out[r] += u[r];
  return out;
}

/** Whether a change of use changes nothing. */
export function isZero(u: Usage): boolean {
  return QUOTA_RESOURCES.every((r) => u[r] === 0);
}

/** A quota's `used`, as a Usage. */
export function usedOf(q: Quota | undefined): Usage {
  const u = q?.used;
  return Object.fromEntries(QUOTA_RESOURCES.map((r) => [r, Number(u?.[LOCAL[r]] ?? 0n)])) as Record<QuotaResource, number>;
}

/** A Usage as a quota's `used`. */
export function toQuotaUsage(u: Usage): QuotaUsage {
  return create(QuotaUsageSchema, Object.fromEntries(QUOTA_RESOURCES.map((r) => [LOCAL[r], BigInt(u[r])])) as never);
}

/** A quota's own limits (those set). */
export function limitsOf(q: Quota | undefined): Limits {
  const l = q?.limits;
  const out: Partial<Record<QuotaResource, number>> = {};
  for (const r of QUOTA_RESOURCES) {
    const v = l?.[LOCAL[r]];
    if (v !== undefined) out[r] = Number(v);
  }
  return out;
}

/** The limit that holds for `r`: the quota's own, else the cluster default, else none (-1). */
export function effectiveLimit(own: Limits, defaults: Limits, r: QuotaResource): number {
  return own[r] ?? defaults[r] ?? -1;
}

/** A new, empty quota of a project (its id the project's). */
export function newQuota(projectId: string, nowMs: number): Quota & { resourceVersion: bigint } {
  const ts = timestampFromMs(nowMs);
  return create(QuotaSchema, { id: projectId, projectId, used: toQuotaUsage(NO_USAGE), createdAt: ts, updatedAt: ts }) as Quota & { resourceVersion: bigint };
}

/** One exceeded limit. */
export interface QuotaViolation {
  /** "project:<id>" */
  readonly subject: string;
  readonly resource: QuotaResource;
  readonly limit: number;
  readonly used: number;
  readonly requested: number;
  /** "quota vcpus of project P exceeded: limit 20, used 18, requested 4" */
  readonly description: string;
}

/** RESOURCE_EXHAUSTED naming every exceeded quota, its limit, its use and the request. */
export class QuotaExceededError extends QuantixError {
  constructor(readonly quotaViolations: readonly QuotaViolation[]) {
    super("resource_exhausted", quotaViolations.map((v) => v.description).join("; "));
  }
}

/**
 * `q` charged with `delta`, or QuotaExceededError when a resource that grows would pass its
 * limit (`defaults` fill the limits the quota does not set). A resource that shrinks or
 * stays is never refused, even over a limit lowered since. Use never goes below zero.
 */
export function charge(q: Quota, delta: Usage, defaults: Limits, nowMs: number): Quota {
  const used = usedOf(q);
  const own = limitsOf(q);
  const violations: QuotaViolation[] = [];
  for (const r of QUOTA_RESOURCES) {
    const d = delta[r];
    if (d <= 0) continue;
    const limit = effectiveLimit(own, defaults, r);
    if (limit >= 0 && used[r] + d > limit) {
      violations.push({ subject: `project:${q.projectId}`, resource: r, limit, used: used[r], requested: d, description: `quota ${r} of project ${q.projectId} exceeded: limit ${limit}, used ${used[r]}, requested ${d}` });
    }
  }
  if (violations.length > 0) throw new QuotaExceededError(violations);
  q.used = toQuotaUsage(Object.fromEntries(QUOTA_RESOURCES.map((r) => [r, Math.max(0, used[r] + delta[r])])) as Record<QuotaResource, number>);
  q.updatedAt = timestampFromMs(nowMs);
  return q;
}
