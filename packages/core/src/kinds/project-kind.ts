import { ProjectSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { PROJECT_ID_FORMAT } from "../resource/id-format.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** Projects (Quantixkvm.identity.v1.Project): every project-scoped resource belongs to one. */
export const PROJECT_KIND = defineKind(ProjectSchema, {
  name: "project",
  table: "quantix_projects",
  fields: {
    name: textField((p) => p.name, { column: "name", filter: "eq", order: true }),
    created_at: timeField((p) => p.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (p) => p.labels,
  unique: { key: (p) => p.name, describe: (p) => `a project named '${p.name}' already exists` },
  projectScoped: false,
  // Project ids from before projects were a kind (free text) stay addressable.
  idFormat: PROJECT_ID_FORMAT,
});
