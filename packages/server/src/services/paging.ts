import { encodePageToken, parsePageRequest, sortKeyOf, type Cursor, type Kind, type ListPage, type Order, type Resource } from "@quantix/core";
import { createHash } from "node:crypto";

/** A page of a List RPC, ready for its response message. */
export interface PageResult<T> {
  readonly items: T[];
  readonly totalCount: number;
  readonly nextPageToken: string;
  readonly resourceVersion: bigint;
}

/**
 * Serves one page of a List RPC: validates page_size, order_by and page_token against
 * the filter, reads the store once, and issues the token for the next page.
 */
export async function listPage<T extends Resource>(
  kind: Kind<T>,
  req: { pageSize: number; pageToken: string; orderBy: string },
  filter: object,
  read: (order: Order<string>, after: Cursor | undefined, limit: number, countTotal: boolean) => Promise<ListPage<T>>,
): Promise<PageResult<T>> {
  const fp = fingerprintOf(filter);
  const page = parsePageRequest(req, kind.orderBy, fp);
  // Only the first page counts matches (a scan of the filter's index); later pages carry
  // that total in their token, so each of them reads just its own rows.
  const result = await read(page.order, page.after, page.size, page.knownTotal === undefined);
  const total = result.totalCount >= 0 ? result.totalCount : (page.knownTotal ?? 0);
  const last = result.items[result.items.length - 1];
  return {
    items: result.items,
    totalCount: total,
    nextPageToken: result.hasMore && last ? encodePageToken(page.order, fp, { key: sortKeyOf(kind, last, page.order.field), id: last.id }, total) : "",
    resourceVersion: result.revision,
  };
}

/** A short hash of a filter, binding page tokens to the query that issued them. */
export function fingerprintOf(filter: object): string {
  const canonical = JSON.stringify(filter, (_k, v: unknown) => (v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort()) : v));
  return createHash("sha256").update(canonical).digest("base64url").slice(0, 22);
}
