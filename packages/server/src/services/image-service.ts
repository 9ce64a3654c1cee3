import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ImageSpecSchema, ImageState, ImageStatusSchema, ImageVisibility, type Image } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImportImageProgressSchema, UpdateImageRequestSchema, type CreateImageRequest, type DeleteImageRequest, type ImportImageProgress, type UpdateImageRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import {
  allOf,
  commonViolations,
  DEFAULT_PROJECT_ID,
  IMAGE_KIND,
  IMAGE_LIMITS,
  notFound,
  PROJECT_KIND,
  QuantixError,
  throwIfViolations,
  validateCreateImage,
  Violations,
  VOLUME_KIND,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
} from "@quantix/core";
import { ResourceWriter, type Budget } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { usablePool } from "./usable-pool.js";

type I = Image & Resource;

/** The metadata paths UpdateImage writes; source, disk_format and pool_id are fixed. */
const MUTABLE_SPEC = ["os", "visibility", "sharedProjectIds", "minDiskGib", "minMemoryMib", "protected", "firmware", "diskBus", "nicModel"] as const;

/** Whether an image's import has ended (no more progress will come): AVAILABLE or ERROR, for its current generation (a retried import has not ended). */
export function importEnded(i: Image): boolean {
  const s = i.status?.state ?? ImageState.UNSPECIFIED;
  return (s === ImageState.AVAILABLE || s === ImageState.ERROR) && (i.status?.observedGeneration ?? 0n) >= i.generation;
}

/**
 * ImageService's writes, the image's own rules over the generic resource writer: create
 * (an http(s) URL source; the import is the image controller's, which takes the image
 * from QUEUED), metadata updates, retries of a failed import (a new generation the
 * controller sees), and delete, refused while the image is protected or volumes use it
 * (linked clones, or volumes still being made from it), unless forced.
 */
export class ImageService {
  private readonly writer: ResourceWriter<I>;

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator }) {
    this.writer = new ResourceWriter(IMAGE_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", ...MUTABLE_SPEC.map((f) => `spec.${snake(f)}`)],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateImageRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          const spec = (draft["spec"] ??= create(ImageSpecSchema)) as Record<string, unknown>;
          const given = clone(ImageSpecSchema, r.spec) as unknown as Record<string, unknown>;
          for (const f of MUTABLE_SPEC) spec[f] = given[f];
        }
      },
      check: (next) => {
        const v = new Violations();
        if (next.name === "" || next.name.length > IMAGE_LIMITS.nameMax || /[\u0000-\u001f\u007f]/.test(next.name)) v.add("name", "INVALID_FORMAT", `must be 1-${IMAGE_LIMITS.nameMax} characters without control characters`);
        checkVisibility(v, next);
        throwIfViolations(v.list);
      },
    });
  }

  /** CreateImage: the image in QUEUED, in its pool (the default pool when none is named). */
  async create(req: CreateImageRequest): Promise<Image> {
    throwIfViolations([...validateCreateImage(req), ...commonViolations(req)]);
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    const spec = clone(ImageSpecSchema, req.spec!);
    const source = spec.source!.source;
    if (source.case === "upload") throw new QuantixError("unimplemented", "images from an upload are not built yet (UploadImage needs a client-streamed upload RPC on the agents): import from an http(s) URL");
    if (source.case === "volumeId" || source.case === "snapshotId") throw new QuantixError("unimplemented", "images from a volume or a snapshot are not built yet: import from an http(s) URL");
    const v = new Violations();
    checkVisibility(v, { spec });
    throwIfViolations(v.list);
    spec.poolId = (await usablePool(this.deps.store, spec.poolId)).id;
    return this.writer.create({ name: req.name, projectId, labels: req.labels, description: req.description, spec, status: create(ImageStatusSchema, { state: ImageState.QUEUED }) });
  }

  update(req: UpdateImageRequest): Promise<Image> {
    return this.writer.update(req.id, UpdateImageRequestSchema, req);
  }

  /**
   * ImportImage on an existing image: one in ERROR is imported again from the start (a
   * new generation, which the image controller takes as the request); any other state is
   * left as it is (followed).
   */
  async retry(id: string): Promise<Image> {
    requireWellFormedId("image_id", id);
    const nowMs = this.deps.clock.now();
    try {
      return await this.deps.store.of(IMAGE_KIND).update(
        id,
        (cur) => {
          if (cur.deletionRequestedAt) throw new QuantixError("failed_precondition", `image '${id}' is being deleted`);
          if (cur.status?.state !== ImageState.ERROR || cur.generation > (cur.status?.observedGeneration ?? 0n)) return undefined;
          cur.generation += 1n;
          cur.updatedAt = timestampFromMs(nowMs);
          return cur;
        },
        { actor: "api" },
      );
    } catch (err) {
      if (err instanceof QuantixError && err.code === "not_found") throw notFound("image", id);
      throw err;
    }
  }

  /**
   * DeleteImage: refused while protected, and while volumes use it (linked clones of its
   * copies, or volumes still being made from it) unless force. Then marked: the image
   * controller cancels a running import and removes its copies, and the image goes.
   * Waits for that within `budget`.
   */
  async delete(req: DeleteImageRequest, budget: Budget): Promise<void> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(IMAGE_KIND).get(req.id);
    if (!cur) throw notFound("image", req.id);
    const users = req.force || cur.deletionRequestedAt ? [] : await imageUsers(this.deps.store, req.id);
    await this.writer.delete(req.id, budget, (now) => {
      if (now.spec?.protected) throw new QuantixError("failed_precondition", `image '${now.id}' is protected: clear spec.protected first`);
      if (users.length > 0) throw new QuantixError("failed_precondition", `image '${now.id}' is used by volume ${users.map((x) => `'${x}'`).join(", ")} (linked clones, or being made from it): delete them first, or delete with force`);
    });
  }
}

/** The volumes that need an image's copies: linked clones of it, and volumes not made from it yet. */
export async function imageUsers(store: Store, imageId: string): Promise<string[]> {
  const out: string[] = [];
  for await (const v of allOf(store.of(VOLUME_KIND), { where: { source_image_id: imageId } })) {
    const s = v.status?.state ?? VolumeState.UNSPECIFIED;
    if ((v.spec?.source?.linked && !v.status?.flattened) || s === VolumeState.PENDING || s === VolumeState.CREATING) out.push(v.id);
  }
  return out;
}

/** One ImportImage message for the image as it is now; the image itself only in the last one. */
export function progressOf(i: Image): ImportImageProgress {
  const s = i.status;
  const state = s?.state ?? ImageState.UNSPECIFIED;
  // The node's finer phase (downloading, verifying, converting) is the Imported condition's reason.
  const phase = s?.conditions.find((c) => c.type === "Imported")?.reason ?? "Downloading";
  const message = state === ImageState.ERROR ? (s?.errorMessage ?? "") : state === ImageState.AVAILABLE ? "ready" : state === ImageState.QUEUED ? "queued" : phase.toLowerCase();
  return create(ImportImageProgressSchema, {
    imageId: i.id,
    state,
    progressPercent: s?.importProgressPercent ?? 0,
    transferredBytes: s?.transferredBytes ?? 0n,
    totalBytes: s?.sourceBytes ?? 0n,
    message,
    ...(importEnded(i) ? { image: i } : {}),
  });
}

/** PUBLIC needs the admin role, which no write here can check yet: refused saying so. */
function checkVisibility(v: Violations, i: { spec?: Image["spec"] }): void {
  const spec = i.spec;
  if (spec?.visibility === ImageVisibility.PUBLIC) v.add("spec.visibility", "UNSUPPORTED", "PUBLIC images are not served yet (they need the admin role): use PRIVATE or SHARED");
  if ((spec?.sharedProjectIds.length ?? 0) > 0 && spec?.visibility !== ImageVisibility.SHARED) v.add("spec.shared_project_ids", "CONFLICT", "needs spec.visibility SHARED");
}

function snake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
