import { ImageSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/** Images (Quantixkvm.storage.v1.Image): OS images a project imports, to make volumes from. The service is not built yet. */
export const IMAGE_KIND = defineKind(ImageSchema, {
  name: "image",
  table: "quantix_images",
  fields: {
    project_id: textField((i) => i.projectId, { column: "project_id", filter: "eq" }),
    name: textField((i) => i.name, { column: "name", filter: "eq", order: true }),
    state: intField((i) => i.status?.state ?? 0, { column: "state", filter: "in" }),
    pool_id: textField((i) => i.spec?.poolId ?? "", { column: "pool_id", filter: "eq" }),
    created_at: timeField((i) => i.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (i) => i.labels,
  unique: { key: (i) => `${i.projectId}/${i.name}`, describe: (i) => `an image named '${i.name}' already exists in project '${i.projectId}'` },
  projectScoped: true,
});
