import { ImageState, type Image } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { IMAGE_KIND, notFound, QuantixError, type Resource, type Store } from "@quantix/core";

/**
 * The image a new volume is made from: NOT_FOUND for a missing one and for one of
 * another project (not told apart); FAILED_PRECONDITION naming its state unless AVAILABLE.
 */
export async function sourceImage(store: Store, id: string, projectId: string): Promise<Image & Resource> {
  const img = await store.of(IMAGE_KIND).get(id);
  if (!img || img.projectId !== projectId) throw notFound("image", id);
  if (img.deletionRequestedAt) throw new QuantixError("failed_precondition", `image '${id}' is being deleted`);
  const state = img.status?.state ?? ImageState.UNSPECIFIED;
  if (state !== ImageState.AVAILABLE) throw new QuantixError("failed_precondition", `image '${id}' is ${ImageState[state]}: a volume needs it AVAILABLE`);
  return img;
}

/** The smallest volume made from an image, in GiB: its virtual size rounded up, or spec.min_disk_gib when larger; at least 1. */
export function imageMinGib(img: Image): bigint {
  const gib = 1n << 30n;
  const virtual = ((img.status?.virtualSizeBytes ?? 0n) + gib - 1n) / gib;
  const min = img.spec?.minDiskGib ?? 0n;
  const least = virtual > min ? virtual : min;
  return least > 0n ? least : 1n;
}
