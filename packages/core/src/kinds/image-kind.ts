import { ImageSchema, ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/** The finalizer every image carries until the image controller has removed its copies from the nodes. */
export const IMAGE_FINALIZER = "quantix.io/image";

/** The component that writes an image's status after its create (STYLE rule 2). */
export const IMAGE_CONTROLLER = "image-controller";

/** UploadImage's handler, which alone has an upload's data: it writes the status of an image with an upload source while the upload runs. */
export const IMAGE_UPLOAD = "image-upload";

/** Images (Quantixkvm.storage.v1.Image): OS images a project imports, to make volumes from. */
export const IMAGE_KIND = defineKind(ImageSchema, {
  name: "image",
  table: "quantix_images",
  fields: {
    project_id: textField((i) => i.projectId, { column: "project_id", filter: "eq" }),
    name: textField((i) => i.name, { column: "name", filter: "eq", order: true }),
    state: intField((i) => i.status?.state ?? 0, { column: "state", filter: "in" }),
    // WatchImages' image_id: one image among the filtered set.
    image_id: textField((i) => i.id, { column: "image_id", filter: "eq" }),
    pool_id: textField((i) => i.spec?.poolId ?? "", { column: "pool_id", filter: "eq" }),
    created_at: timeField((i) => i.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (i) => i.labels,
  unique: { key: (i) => `${i.projectId}/${i.name}`, describe: (i) => `an image named '${i.name}' already exists in project '${i.projectId}'` },
  projectScoped: true,
  finalizers: [IMAGE_FINALIZER],
  owned: [{ path: "status", value: (i) => i.status, owners: [IMAGE_CONTROLLER, IMAGE_UPLOAD] }],
  // An image no node is importing and none holds has no file anywhere (only the image
  // controller writes files, after it marks the image IMPORTING; a failed import leaves
  // none): nothing to wait for.
  pendingFinalizers: (i) => {
    const s = i.status?.state ?? ImageState.UNSPECIFIED;
    const idle = s === ImageState.UNSPECIFIED || s === ImageState.QUEUED || s === ImageState.ERROR;
    return idle && (i.status?.copies.length ?? 0) === 0 ? [] : [IMAGE_FINALIZER];
  },
});
