import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { ListProjectsRequestSchema, ListProjectsResponseSchema, ListRoleBindingsRequestSchema, ListRoleBindingsResponseSchema, ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { PROJECT_KIND, ROLE_BINDING_KIND, type Kind, type Resource, type Store } from "@quantix/core";
import type { Route } from "@quantix/rpc";
import { callerOf } from "../identity/principals.js";
import type { ProjectService as Projects } from "../identity/project-service.js";
import { ResourceReader, resourceRoute } from "../resources/index.js";
import { budgetOf } from "./budget.js";

/**
 * Quantixkvm.identity.v1.ProjectService: GetProject is the project kind's generic read;
 * the rest has its own rules. Lists show what the caller may see.
 */
export function projectServiceRoute(store: Store, projects: Projects, defaultDeadlineMs: number): Route {
  const projectReader = new ResourceReader(PROJECT_KIND as unknown as Kind<Resource>, store);
  const bindingReader = new ResourceReader(ROLE_BINDING_KIND as unknown as Kind<Resource>, store);
  return resourceRoute(ProjectService, PROJECT_KIND as never, store, {
    impl: {
      createProject: (req) => projects.create(req),
      listProjects: async (req, ctx) => {
        const by = callerOf(ctx);
        if (by.systemAdmin) return projectReader.list(ListProjectsRequestSchema, ListProjectsResponseSchema, req) as never;
        const own = await projects.listOwn(req, by);
        return create(ListProjectsResponseSchema, { projects: own, totalCount: own.length, resourceVersion: await store.revision() });
      },
      updateProject: (req) => projects.update(req),
      deleteProject: async (req, ctx) => {
        await projects.delete(req.id, budgetOf(ctx, defaultDeadlineMs));
        return create(EmptySchema);
      },
      setRoleBinding: (req) => projects.setBinding(req),
      deleteRoleBinding: async (req) => {
        await projects.deleteBinding(req);
        return create(EmptySchema);
      },
      listRoleBindings: (req, ctx) => bindingReader.list(ListRoleBindingsRequestSchema, ListRoleBindingsResponseSchema, req, undefined, ctx) as never,
    },
  });
}
