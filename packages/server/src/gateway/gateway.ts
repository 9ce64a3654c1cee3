import type { Store } from "@quantix/core";
import type { Logger, Route } from "@quantix/rpc";
import { SqlStore } from "../store/sql/sql-store.js";
import { FileBlobs, SqlBlobs } from "./blobs.js";
import { DIFF_LIMITS } from "./diff.js";
import type { DocEngine } from "./doc-engine.js";
import { DocStore } from "./doc-store.js";
import { memoryGatewayRoute } from "./gateway-routes.js";
import { MemoryDocEngine } from "./memory-doc-engine.js";
import { LocalPresence, SqlPresence, type PresenceBus } from "./presence.js";
import { SessionHub } from "./sessions.js";
import { SqlDocEngine } from "./sql-doc-engine.js";

/** Room in a message beyond its document or diff: ids, clocks (1024 entries) and metadata (64 × 4 KiB). */
const ENVELOPE_BYTES = 1024 * 1024;

/** The MemoryGateway of one process: its documents, sessions, and the route that serves them. */
export interface Gateway {
  readonly docs: DocStore;
  readonly sessions: SessionHub;
  readonly route: Route;
  close(): Promise<void>;
}

/**
 * Opens the gateway on a store: documents in the store's database (the embedded one or
 * PostgreSQL: tables of migration 16), or in memory with the memory store; sessions'
 * presence shared through PostgreSQL when replicas share it.
 */
/** How often a replica compacts the history beyond the retention. */
const COMPACT_EVERY_MS = 30_000;

export async function openGateway(store: Store, log: Logger, options: { blobDir?: string | undefined; historyVersions?: number } = {}): Promise<Gateway> {
  let engine: DocEngine;
  let presence: PresenceBus;
  const onError = (err: unknown) => log.log("warn", "MemoryGateway: reading the document history failed; retrying", { error: String((err as Error)?.message ?? err) });
  if (store instanceof SqlStore) {
    // Large documents: files beside the embedded database (one process owns it), rows every PostgreSQL replica reads.
    const blobs = store.driver.kind === "embedded" && options.blobDir ? new FileBlobs(options.blobDir) : new SqlBlobs();
    engine = await SqlDocEngine.open(store.driver, blobs, { onError });
    presence = store.driver.kind === "postgres" ? await SqlPresence.open(store.driver, { onError }) : new LocalPresence();
  } else {
    engine = new MemoryDocEngine();
    presence = new LocalPresence();
  }
  const docs = new DocStore(engine);
  const sessions = new SessionHub(docs, presence);
  // The history beyond the retention goes (every replica tries; one compaction at a time wins).
  const keep = BigInt(options.historyVersions ?? 100_000);
  let compacting: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    compacting ??= docs
      .compact(keep)
      .then((n) => n > 0 && log.log("info", "MemoryGateway: compacted the document history", { changes_removed: n }))
      .catch((err: unknown) => log.log("warn", "MemoryGateway: compacting the document history failed; retrying later", { error: String((err as Error)?.message ?? err) }))
      .finally(() => (compacting = undefined));
  }, COMPACT_EVERY_MS);
  timer.unref();
  const base = memoryGatewayRoute(docs, sessions);
  return {
    docs,
    sessions,
    // Documents may be large, and often compress: responses over 1 KiB are gzipped for clients that accept it (adr-0001).
    route: { ...base, limits: { readMaxBytes: DIFF_LIMITS.maxDiffBytes + ENVELOPE_BYTES, writeMaxBytes: DIFF_LIMITS.maxDocumentBytes + ENVELOPE_BYTES }, compressMinBytes: 1024 },
    async close() {
      clearInterval(timer);
      await compacting;
      await presence.close();
      await engine.close();
    },
  };
}
