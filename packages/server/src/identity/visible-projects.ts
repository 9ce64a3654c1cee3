import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { FilterValue, Kind, Resource } from "@quantix/core";

/**
 * Set by the authorization interceptor on a List or Watch of a caller who is not a system
 * admin: the projects whose objects it may see (undefined: every project). The generic
 * List and Watch (resources/resource-routes.ts) filter by it.
 */
export const visibleProjectsKey = createContextKey<readonly string[] | undefined>(undefined, { description: "projects a list or watch may show" });

/** The extra filter a List or Watch of `kind` gets from the caller's visible projects, if any. */
export function visibleFilter(kind: Kind<Resource>, ctx: HandlerContext | undefined, requested: Readonly<Record<string, FilterValue>>): Record<string, FilterValue> | undefined {
  if (!ctx || !kind.fields["project_id"] || requested["project_id"] !== undefined) return undefined;
  const visible = ctx.values.get(visibleProjectsKey);
  return visible ? { project_id: [...visible].sort() } : undefined;
}
