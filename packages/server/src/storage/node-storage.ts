/**
 * The node side of storage as the control plane drives it: one node's pools and the
 * volumes in them. Level-based and id-derived, as the agent's vmm.v1.StorageService
 * (proto/vmm/v1/storage.proto on the storage-agent branch): every call states what should
 * exist and the node makes it so, idempotently; every name on disk derives from ids
 * (UUIDs), never from user strings. A failure throws a QuantixError whose code says what
 * kind (FAILED_PRECONDITION, RESOURCE_EXHAUSTED, NOT_FOUND, ...) and whose message a user
 * can act on; the volume controller writes it into a condition.
 */
export interface NodeStorage {
  /** What serves this node's storage ("directory" for the demo's in-process hosts, "agent" for a host agent). */
  readonly kind: string;
  /** Makes the pool exist on the node (DIR: `<root>/<pool id>`; SHARED_DIR: adopts `path`) and measures it. */
  ensurePool(req: PoolRef & { readonly type: NodePoolType; readonly path?: string }): Promise<NodePool>;
  /** Removes the pool from the node (its marker; for DIR its directory); refused while it holds volumes; NOT_FOUND when it is not there. */
  deletePool(req: PoolRef & { readonly type: NodePoolType; readonly path?: string }): Promise<void>;
  /** Creates a volume (empty of `sizeBytes`, or from a volume of the same pool); the same request again returns it. */
  createVolume(req: VolumeRef & { readonly format: NodeVolumeFormat; readonly sizeBytes: bigint; readonly source?: NodeVolumeSource }): Promise<NodeVolume>;
  /** Grows a volume to `sizeBytes` (never shrinks); the current size again changes nothing. */
  resizeVolume(req: VolumeRef & { readonly sizeBytes: bigint }): Promise<NodeVolume>;
  /** Removes a volume's file; NOT_FOUND when it is not there. Refused while another volume uses it as backing file, unless `force`. */
  deleteVolume(req: VolumeRef & { readonly force: boolean }): Promise<void>;
  /** The volume as the node sees it now, or undefined when it does not exist there. */
  volumeInfo(req: VolumeRef): Promise<NodeVolume | undefined>;
  /**
   * Imports an image from an http(s) URL into a new volume (the agent's ImportVolume):
   * yields progress, at most every few MiB, ending with `ready` and the volume; a volume
   * already there ends at once. Fails with the node's reason (UNAVAILABLE for what cannot be
   * downloaded, FAILED_PRECONDITION for a checksum mismatch or a refused image,
   * RESOURCE_EXHAUSTED for no room), leaving no partial file. `signal` cancels it.
   */
  importImage(req: NodeImportRequest, signal: AbortSignal): AsyncIterable<NodeImportProgress>;
  /**
   * Receives an image's bytes into a new volume (the agent's UploadVolume): `chunks` in
   * order, each 1 byte to 4 MiB; then the import's verify, inspect and convert. Resolves with
   * the volume once it exists. Fails with the node's reason (OUT_OF_RANGE for more data than
   * declared, DATA_LOSS for less, RESOURCE_EXHAUSTED for no room, FAILED_PRECONDITION for a
   * checksum mismatch or a refused image, ALREADY_EXISTS when the volume exists), leaving
   * no partial file; a `chunks` that throws or `signal` ends it the same way.
   */
  uploadImage(req: NodeUploadRequest, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<NodeUploadResult>;
  /** The SHA-256 of a volume's file, read whole on the node (an image made from a volume records it). */
  volumeSha256(req: VolumeRef): Promise<string>;
  /**
   * A volume's file as stored, in order, in chunks of at most 1 MiB (the agent's
   * ReadVolume): how an image without a URL is copied to another node. FAILED_PRECONDITION
   * for a linked clone.
   */
  readVolume(req: VolumeRef, signal: AbortSignal): AsyncIterable<Uint8Array>;
  /**
   * Takes an internal snapshot of a qcow2 volume, offline, tagged with `snapshotId` (a
   * UUID); the same id again returns it. FAILED_PRECONDITION for a raw volume or one a
   * running VM holds open.
   */
  createSnapshot(req: SnapshotRef): Promise<NodeSnapshot>;
  /** Rolls the volume back to the snapshot, offline; NOT_FOUND when it has none of that id. Refused while the volume backs a linked clone. */
  revertSnapshot(req: SnapshotRef): Promise<NodeSnapshot>;
  /** Deletes the snapshot; NOT_FOUND when the volume has none of that id (or the volume is gone). */
  deleteSnapshot(req: SnapshotRef): Promise<void>;
  /** The volume's snapshots taken by the control plane (UUID tags), oldest first. */
  listSnapshots(req: VolumeRef): Promise<NodeSnapshot[]>;
}

/** What a new volume is made from: a volume of the same pool, as it is now or at one of its snapshots. */
export interface NodeVolumeSource {
  readonly volumeId: string;
  /** A qcow2 overlay on the source (never with `snapshotId`); otherwise a full copy. */
  readonly linked: boolean;
  /** Copy the source as it was at this snapshot of it. */
  readonly snapshotId?: string;
}

/** Names a snapshot of a volume on a node. */
export interface SnapshotRef extends VolumeRef {
  readonly snapshotId: string;
}

/** An internal snapshot of a volume as the node sees it. */
export interface NodeSnapshot {
  readonly snapshotId: string;
  /** When it was taken (from the image), ms since the epoch. */
  readonly takenAtMs: number;
  /** Bytes of VM memory state it holds (0 for a disk-only snapshot). */
  readonly vmStateBytes: bigint;
}

/** What to import into a node's pool. */
export interface NodeImportRequest extends VolumeRef {
  readonly format: NodeVolumeFormat;
  /** An http or https URL (validated by the caller). */
  readonly url: string;
  /** Expected SHA-256 of the downloaded bytes, lowercase hex; empty: not checked. */
  readonly sha256: string;
}

/** What to upload into a node's pool. */
export interface NodeUploadRequest extends VolumeRef {
  readonly format: NodeVolumeFormat;
  /** The data's size; 0n when not known. */
  readonly sizeBytes: bigint;
  /** Expected SHA-256 of the data, lowercase hex; empty: not checked. */
  readonly sha256: string;
  /** The format the sender declares (qcow2, raw, vmdk, vdi, vhdx, vpc, iso); empty: any. Checked against the content. */
  readonly expectedFormat: string;
}

/** What an upload made on a node. */
export interface NodeUploadResult {
  readonly bytesReceived: bigint;
  /** The SHA-256 of the data received. */
  readonly sha256: string;
  /** qcow2, raw, vmdk, vdi, vhdx, vpc or iso. */
  readonly detectedFormat: string;
  readonly volume: NodeVolume;
}

/** One step of an import on a node. */
export interface NodeImportProgress {
  readonly phase: "downloading" | "verifying" | "converting" | "ready";
  readonly bytesDone: bigint;
  /** 0 when the server announced no length. */
  readonly bytesTotal: bigint;
  /** From verifying on: the SHA-256 of the downloaded bytes. */
  readonly sha256: string;
  /** From verifying on: qcow2, raw, vmdk, vdi, vhdx, vpc or iso. */
  readonly detectedFormat: string;
  /** In the ready step: the new volume. */
  readonly volume?: NodeVolume;
}

/**
 * The agent's import code for a directory of pools this process keeps itself (the demo's
 * simulated hosts): given the pools' root, an importer into its DIR pools. The composition
 * root hands it over (the server does not import the agent; see DirNodeStorage).
 */
export type DirImporterFactory = (root: string) => (req: NodeImportRequest, signal: AbortSignal) => AsyncIterable<NodeImportProgress>;

/** The agent's upload code for a directory of pools this process keeps itself (as DirImporterFactory). */
export type DirUploaderFactory = (root: string) => (req: NodeUploadRequest, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal) => Promise<Omit<NodeUploadResult, "volume">>;

/** The pool types a node manages. */
export type NodePoolType = "DIR" | "SHARED_DIR";

/** The volume formats a node creates. */
export type NodeVolumeFormat = "qcow2" | "raw";

/** Names a pool on a node. */
export interface PoolRef {
  readonly poolId: string;
}

/** Names a volume on a node. */
export interface VolumeRef extends PoolRef {
  readonly volumeId: string;
}

/** A pool as the node measures it. */
export interface NodePool {
  readonly poolId: string;
  readonly capacityBytes: bigint;
  readonly availableBytes: bigint;
  readonly usedBytes: bigint;
  /** Sum of the pool's volumes' virtual sizes. */
  readonly provisionedBytes: bigint;
  readonly volumeCount: number;
  /** The pool's directory on the node (volumes are `<path>/<volume id>.<format>`), when the node reports it. */
  readonly path?: string;
}

/** A volume as the node sees it (qemu-img info). */
export interface NodeVolume {
  readonly volumeId: string;
  readonly format: NodeVolumeFormat;
  readonly virtualSizeBytes: bigint;
  readonly actualSizeBytes: bigint;
  /** The volume of the same pool this one is a linked clone of; empty when none. */
  readonly backingVolumeId: string;
  /** The volume's file on the node, for a VM's disk (VmConfig). */
  readonly path: string;
}

/** Finds the NodeStorage of a node: undefined when this replica reaches none for it (the node is not connected). */
export type NodeStorageLookup = (nodeId: string) => NodeStorage | undefined;
