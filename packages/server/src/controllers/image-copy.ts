import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { IMAGE_KIND, type Store } from "@quantix/core";

/**
 * Why a volume from image `imageId` cannot be made at `at` (a node, "" for a shared pool,
 * and a pool) yet: the image is gone or not AVAILABLE, or its copy there is not made yet
 * (with the image controller's last failure to make it); undefined when the copy is there.
 */
export async function imageCopyMissing(store: Store, imageId: string, at: { nodeId: string; poolId: string }): Promise<{ reason: string; message: string } | undefined> {
  const img = await store.of(IMAGE_KIND).get(imageId);
  if (!img || img.deletionRequestedAt) return { reason: "ImageNotFound", message: `image '${imageId}' is gone` };
  const state = img.status?.state ?? ImageState.UNSPECIFIED;
  if (state !== ImageState.AVAILABLE) return { reason: "WaitingForImage", message: `image '${imageId}' is ${ImageState[state]}, not AVAILABLE` };
  if (img.status!.copies.some((c) => c.nodeId === at.nodeId && c.poolId === at.poolId)) return undefined;
  const copied = img.status!.conditions.find((c) => c.type === "Copied" && c.status === ConditionStatus.FALSE);
  return { reason: "WaitingForImageCopy", message: `image '${imageId}' is being copied to node '${at.nodeId}' pool '${at.poolId}'${copied ? ` (last attempt: ${copied.message})` : ""}` };
}
