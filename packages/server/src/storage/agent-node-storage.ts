import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { CloneMode, ImportPhase, StoragePoolType, StorageService, VolumeFormat, type UploadVolumeRequestSchema, type Pool, type Volume, type VolumeSnapshot } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { QuantixError } from "@quantix/core";
import type { NodeImportProgress, NodeImportRequest, NodeUploadRequest, NodeUploadResult, NodePool, NodePoolType, NodeSnapshot, NodeStorage, NodeVolume, NodeVolumeFormat, NodeVolumeSource, SnapshotRef, VolumeRef } from "./node-storage.js";

const POOL_TYPES: Record<NodePoolType, StoragePoolType> = { DIR: StoragePoolType.DIR, SHARED_DIR: StoragePoolType.SHARED_DIR };
const FORMATS: Record<NodeVolumeFormat, VolumeFormat> = { qcow2: VolumeFormat.QCOW2, raw: VolumeFormat.RAW };
const PHASES: Partial<Record<ImportPhase, NodeImportProgress["phase"]>> = {
  [ImportPhase.DOWNLOADING]: "downloading",
  [ImportPhase.VERIFYING]: "verifying",
  [ImportPhase.CONVERTING]: "converting",
  [ImportPhase.READY]: "ready",
};

/**
 * A host agent's storage, through its vmm.v1.StorageService on the node's agent
 * connection (the same transport, TLS and identity checks as its VmService). Each method
 * is the matching agent call, sizes in bytes as they are, pool types and formats mapped
 * one to one; the agent's errors keep their code and words (`wrap`, the same mapping as
 * the node's VM calls), so a RESOURCE_EXHAUSTED from the node reaches the volume's
 * condition as it was said.
 */
export class AgentNodeStorage implements NodeStorage {
  readonly kind = "agent";
  private readonly client: Client<typeof StorageService>;

  constructor(
    transport: Transport,
    /** Runs an agent call: refuses at once while the node is unreachable, maps the agent's errors. */
    private readonly wrap: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {
    this.client = createClient(StorageService, transport);
  }

  async ensurePool(req: { poolId: string; type: NodePoolType; path?: string }): Promise<NodePool> {
    const p = await this.wrap(() => this.client.ensurePool({ poolId: req.poolId, type: POOL_TYPES[req.type], path: req.path ?? "" }));
    return nodePool(p);
  }

  async deletePool(req: { poolId: string }): Promise<void> {
    await this.wrap(() => this.client.deletePool({ poolId: req.poolId }));
  }

  async createVolume(req: { poolId: string; volumeId: string; format: NodeVolumeFormat; sizeBytes: bigint; source?: NodeVolumeSource }): Promise<NodeVolume> {
    const v = await this.wrap(() =>
      this.client.createVolume({
        poolId: req.poolId,
        volumeId: req.volumeId,
        format: FORMATS[req.format],
        sizeBytes: req.sizeBytes,
        ...(req.source ? { source: { volumeId: req.source.volumeId, mode: req.source.linked ? CloneMode.LINKED : CloneMode.FULL, snapshotId: req.source.snapshotId ?? "" } } : {}),
      }),
    );
    return nodeVolume(v);
  }

  async resizeVolume(req: { poolId: string; volumeId: string; sizeBytes: bigint }): Promise<NodeVolume> {
    return nodeVolume(await this.wrap(() => this.client.resizeVolume({ poolId: req.poolId, volumeId: req.volumeId, sizeBytes: req.sizeBytes })));
  }

  async deleteVolume(req: { poolId: string; volumeId: string; force: boolean }): Promise<void> {
    await this.wrap(() => this.client.deleteVolume({ poolId: req.poolId, volumeId: req.volumeId, force: req.force }));
  }

  async volumeInfo(req: { poolId: string; volumeId: string }): Promise<NodeVolume | undefined> {
    try {
      return nodeVolume(await this.wrap(() => this.client.getVolume({ poolId: req.poolId, volumeId: req.volumeId })));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** The agent's ImportVolume stream; its errors mapped as every other call's (the stream is opened and read inside `wrap`). */
  async *importImage(req: NodeImportRequest, signal: AbortSignal): AsyncIterable<NodeImportProgress> {
    const steps: NodeImportProgress[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    const done = this.wrap(async () => {
      try {
        for await (const p of this.client.importVolume({ poolId: req.poolId, volumeId: req.volumeId, format: FORMATS[req.format], url: req.url, sha256: req.sha256 }, { signal })) {
          const phase = PHASES[p.phase];
          if (!phase) continue;
          steps.push({ phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, sha256: p.sha256, detectedFormat: p.detectedFormat, ...(p.volume ? { volume: nodeVolume(p.volume) } : {}) });
          wake?.();
        }
      } finally {
        finished = true;
        wake?.();
      }
    });
    // The stream's failure surfaces once the steps before it are yielded.
    done.catch(() => undefined);
    for (;;) {
      const next = steps.shift();
      if (next) {
        yield next;
        continue;
      }
      if (finished) break;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    await done;
  }

  /** The agent's UploadVolume: a header, then `chunks` as they come (a client stream over the agent connection). */
  async uploadImage(req: NodeUploadRequest, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<NodeUploadResult> {
    async function* messages(): AsyncGenerator<MessageInitShape<typeof UploadVolumeRequestSchema>> {
      yield { content: { case: "header", value: { poolId: req.poolId, volumeId: req.volumeId, format: FORMATS[req.format], sizeBytes: req.sizeBytes, sha256: req.sha256, expectedFormat: req.expectedFormat } } };
      for await (const c of chunks) yield { content: { case: "chunk", value: c } };
    }
    const res = await this.wrap(() => this.client.uploadVolume(messages(), { signal }));
    if (!res.volume) throw new QuantixError("internal", "the agent ended the upload without the volume");
    return { bytesReceived: res.bytesReceived, sha256: res.sha256, detectedFormat: res.detectedFormat, volume: nodeVolume(res.volume) };
  }

  async volumeSha256(req: VolumeRef): Promise<string> {
    return (await this.wrap(() => this.client.getVolume({ poolId: req.poolId, volumeId: req.volumeId, sha256: true }))).sha256;
  }

  async *readVolume(req: VolumeRef, signal: AbortSignal): AsyncIterable<Uint8Array> {
    const stream = this.client.readVolume({ poolId: req.poolId, volumeId: req.volumeId }, { signal });
    try {
      for await (const m of stream) yield m.data;
    } catch (err) {
      // The agent's words and code, as for the unary calls.
      await this.wrap(() => Promise.reject(err));
    }
  }

  async createSnapshot(req: SnapshotRef): Promise<NodeSnapshot> {
    return nodeSnapshot(await this.wrap(() => this.client.createVolumeSnapshot(snapshotRef(req))));
  }

  async revertSnapshot(req: SnapshotRef): Promise<NodeSnapshot> {
    return nodeSnapshot(await this.wrap(() => this.client.revertVolumeSnapshot(snapshotRef(req))));
  }

  async deleteSnapshot(req: SnapshotRef): Promise<void> {
    await this.wrap(() => this.client.deleteVolumeSnapshot(snapshotRef(req)));
  }

  async listSnapshots(req: VolumeRef): Promise<NodeSnapshot[]> {
    const res = await this.wrap(() => this.client.listVolumeSnapshots({ poolId: req.poolId, volumeId: req.volumeId }));
    return res.snapshots.map(nodeSnapshot);
  }
}

function snapshotRef(req: SnapshotRef): { poolId: string; volumeId: string; snapshotId: string } {
  return { poolId: req.poolId, volumeId: req.volumeId, snapshotId: req.snapshotId };
}

function nodeSnapshot(s: VolumeSnapshot): NodeSnapshot {
  return { snapshotId: s.snapshotId, takenAtMs: s.createdAt ? timestampMs(s.createdAt) : 0, vmStateBytes: s.vmStateBytes };
}

function isNotFound(err: unknown): boolean {
  if (err instanceof QuantixError) return err.code === "not_found";
  return err instanceof ConnectError && err.code === Code.NotFound;
}

function nodePool(p: Pool): NodePool {
  const c = p.capacity;
  return {
    poolId: p.poolId,
    capacityBytes: c?.totalBytes ?? 0n,
    availableBytes: c?.availableBytes ?? 0n,
    usedBytes: c?.usedBytes ?? 0n,
    provisionedBytes: c?.provisionedBytes ?? 0n,
    volumeCount: c?.volumeCount ?? 0,
    ...(p.path !== "" ? { path: p.path } : {}),
  };
}

function nodeVolume(v: Volume): NodeVolume {
  if (v.problem !== "") throw new QuantixError("failed_precondition", `volume '${v.volumeId}' on the node is refused: ${v.problem}`);
  const format: NodeVolumeFormat = v.format === VolumeFormat.RAW ? "raw" : "qcow2";
  return { volumeId: v.volumeId, format, virtualSizeBytes: v.virtualSizeBytes, actualSizeBytes: v.actualSizeBytes, backingVolumeId: v.backingVolumeId, path: v.path };
}

/** NodeStorage of a node whose storage has no place to live (a simulated host without QUANTIX_STORAGE_DIR), or whose agent is not connected. */
export class UnavailableNodeStorage implements NodeStorage {
  readonly kind = "unavailable";

  constructor(
    private readonly reason: string,
    private readonly code: "failed_precondition" | "unavailable" = "failed_precondition",
  ) {}

  private refuse<T>(): Promise<T> {
    return Promise.reject(new QuantixError(this.code, this.reason));
  }
  ensurePool(): Promise<NodePool> {
    return this.refuse();
  }
  deletePool(): Promise<void> {
    return this.refuse();
  }
  createVolume(): Promise<NodeVolume> {
    return this.refuse();
  }
  resizeVolume(): Promise<NodeVolume> {
    return this.refuse();
  }
  deleteVolume(): Promise<void> {
    return this.refuse();
  }
  volumeInfo(): Promise<NodeVolume | undefined> {
    return this.refuse();
  }
  async *importImage(): AsyncIterable<NodeImportProgress> {
    await this.refuse();
  }
  uploadImage(): Promise<NodeUploadResult> {
    return this.refuse();
  }
  volumeSha256(): Promise<string> {
    return this.refuse();
  }
  // eslint-disable-next-line require-yield
  async *readVolume(): AsyncIterable<Uint8Array> {
    await this.refuse();
  }
  createSnapshot(): Promise<NodeSnapshot> {
    return this.refuse();
  }
  revertSnapshot(): Promise<NodeSnapshot> {
    return this.refuse();
  }
  deleteSnapshot(): Promise<void> {
    return this.refuse();
  }
  listSnapshots(): Promise<NodeSnapshot[]> {
    return this.refuse();
  }
}
