import { compareCursor, encodePageToken, parsePageRequest, type Cursor } from "@quantix/core";
import type { BackendVmInfo, BackendVmState } from "./backend.js";

/** vm.proto's ListVms page sizes: 1-1000, 0 means 100. */
export const LIST_PAGE_DEFAULT = 100;

/** A ListVms request in domain terms. */
export interface ListQuery {
  readonly state?: BackendVmState | undefined;
  readonly pageSize: number;
  readonly pageToken: string;
  /** "vm_id" (default) or "created_at", optionally followed by " desc". */
  readonly orderBy: string;
}

/** One page of VMs. */
export interface ListPage {
  readonly vms: BackendVmInfo[];
  readonly nextPageToken: string;
  readonly totalCount: number;
}

/**
 * Filters, sorts and pages the backend's VMs. The token (core's pagination) names the
 * last item's sort key and id, bound to the filter and order, so VMs created or deleted
 * between pages neither shift nor repeat the others.
 */
export function pageVms(all: readonly BackendVmInfo[], createdAt: (vmId: string) => number, q: ListQuery): ListPage {
  const filter = q.state ?? "any";
  const req = parsePageRequest({ pageSize: q.pageSize, pageToken: q.pageToken, orderBy: q.orderBy }, ["vm_id", "created_at"] as const, filter);
  const size = q.pageSize === 0 ? LIST_PAGE_DEFAULT : req.size;
  const key = (vm: BackendVmInfo): Cursor => ({ key: req.order.field === "vm_id" ? vm.vmId : createdAt(vm.vmId), id: vm.vmId });
  const dir = req.order.desc ? -1 : 1;
  const matching = all.filter((vm) => q.state === undefined || vm.state === q.state);
  const sorted = matching.sort((a, b) => dir * compareCursor(key(a), key(b)));
  const after = req.after;
  const rest = after ? sorted.filter((vm) => dir * compareCursor(key(vm), after) > 0) : sorted;
  const page = rest.slice(0, size);
  const last = page[page.length - 1];
  const nextPageToken = rest.length > size && last ? encodePageToken(req.order, filter, key(last)) : "";
  return { vms: page, nextPageToken, totalCount: matching.length };
}
