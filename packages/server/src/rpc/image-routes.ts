import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { ImageService, type ImportImageProgress, type ImportImageRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { IMAGE_KIND, invalidArgument, QuantixError, type Store } from "@quantix/core";
import type { Route } from "@quantix/rpc";
import { resourceRoute } from "../resources/resource-routes.js";
import { importEnded, progressOf, type ImageService as Images } from "../services/image-service.js";
import type { ImageUploads } from "../services/image-upload.js";
import { budgetOf } from "./budget.js";

/** ListImages filters no index answers yet: refused when set rather than ignored. */
const notYet = (field: string, empty: unknown) => (value: unknown) => {
  if (value !== empty) throw new QuantixError("unimplemented", `ListImages.${field} is not supported yet: list the images and read their spec`);
  return {};
};

/**
 * Quantixkvm.storage.v1.ImageService: Get, List and Watch are the image kind's generic
 * reads; Create, Update and Delete have the image's rules; ImportImage creates (or
 * retries) an import and follows the image's changes until it is AVAILABLE or ERROR (the
 * import is the image controller's: a client that goes away cancels nothing).
 * UploadImage receives an image's data and forwards it to a node as it comes (ImageUploads).
 */
export function imageServiceRoute(store: Store, images: Images, uploads: ImageUploads, defaultDeadlineMs: number): Route {
  return resourceRoute(ImageService, IMAGE_KIND as never, store, {
    impl: {
      createImage: (req) => images.create(req),
      updateImage: (req) => images.update(req),
      deleteImage: async (req, ctx) => {
        await images.delete(req, budgetOf(ctx, defaultDeadlineMs));
        return create(EmptySchema);
      },
      importImage: (req, ctx) => importImage(store, images, req, ctx.signal),
      uploadImage: (reqs, ctx) => uploads.upload(reqs, ctx.signal),
    },
    filters: {
      visibility: notYet("visibility", 0),
      os_type: notYet("os_type", 0),
      name_prefix: notYet("name_prefix", ""),
    },
  });
}

/** ImportImage: the image's progress, one message per change, until its import ends. */
async function* importImage(store: Store, images: Images, req: ImportImageRequest, signal: AbortSignal): AsyncGenerator<ImportImageProgress> {
  const t = req.target;
  let id: string;
  switch (t.case) {
    case "create":
      if (t.value.spec?.source?.source.case === "upload") throw invalidArgument([{ field: "create.spec.source", reason: "CONFLICT", description: "ImportImage imports from a URL; an upload source is sent with UploadImage" }]);
      try {
        id = (await images.create(t.value)).id;
      } catch (err) {
        // Field paths are the request's: under `create`.
        if (err instanceof QuantixError && err.code === "invalid_argument") throw invalidArgument(err.violations.map((v) => ({ ...v, field: `create.${v.field}` })));
        throw err;
      }
      break;
    case "imageId":
      id = (await images.retry(t.value)).id;
      break;
    default:
      throw invalidArgument([{ field: "image_id", reason: "REQUIRED", description: "one of image_id or create is required" }]);
  }
  const coll = store.of(IMAGE_KIND);
  const from = await store.revision();
  const now = await coll.get(id);
  if (!now) throw new QuantixError("not_found", `image '${id}' was deleted`);
  yield progressOf(now);
  if (importEnded(now)) return;
  let last = now.resourceVersion;
  for await (const ev of coll.watch(from, signal)) {
    if (ev.type === "SYNCED" || ev.object.id !== id || ev.revision <= last) continue;
    last = ev.revision;
    if (ev.type === "DELETED") throw new QuantixError("aborted", `image '${id}' was deleted during its import`);
    yield progressOf(ev.object);
    if (importEnded(ev.object)) return;
  }
}
