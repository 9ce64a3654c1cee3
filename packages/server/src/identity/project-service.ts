import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PrincipalType, Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { RoleBindingSchema, type Project, type RoleBinding } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { UpdateProjectRequestSchema, type CreateProjectRequest, type DeleteRoleBindingRequest, type ListProjectsRequest, type SetRoleBindingRequest, type UpdateProjectRequest } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import {
  allOf,
  API_TOKEN_KIND,
  checkId,
  CREDENTIAL_KIND,
  DEFAULT_PROJECT_ID,
  matchesLabels,
  notFound,
  PROJECT_ID_FORMAT,
  PROJECT_KIND,
  QUOTA_KIND,
  QuantixError,
  RESOURCE_ID_FORMAT,
  ROLE_BINDING_KIND,
  SERVICE_ACCOUNT_KIND,
  throwIfViolations,
  USER_KIND,
  Violations,
  VM_KIND,
  VOLUME_KIND,
  IMAGE_KIND,
  VIRTUAL_NETWORK_KIND,
  PORT_KIND,
  SECURITY_GROUP_KIND,
  DEFAULT_SECURITY_GROUP,
  type Kind,
  type Resource,
  type Clock,
  type IdGenerator,
  type Principal,
  type Store,
  type TxOp,
} from "@quantix/core";
import { ResourceWriter, type Budget } from "../resources/resource-writer.js";
import type { IdentityIndex } from "./identity-index.js";
import { checkProjectName } from "./identity-rules.js";
import { kindOf } from "./user-service.js";

/** What the project service needs. */
export interface ProjectServiceDeps {
  readonly store: Store;
  readonly index: IdentityIndex;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

/** Projects (over the generic resource writer) and role bindings. */
export class ProjectService {
  private readonly writer: ResourceWriter<Project>;

  constructor(private readonly d: ProjectServiceDeps) {
    this.writer = new ResourceWriter(PROJECT_KIND, d.store, d.clock, d.ids, {
      writable: ["name", "description", "labels"],
      check: (next) => {
        const v = new Violations();
        checkProjectName(v, "name", next.name);
        throwIfViolations(v.list);
      },
    });
  }

  create(req: CreateProjectRequest): Promise<Project> {
    return this.writer.create({ name: req.name, description: req.description, labels: req.labels });
  }

  update(req: UpdateProjectRequest): Promise<Project> {
    return this.writer.update(req.id, UpdateProjectRequestSchema, req);
  }

  /** The projects a caller who is not a system admin has a role in, filtered as asked (one page: a caller has few). */
  async listOwn(req: ListProjectsRequest, by: Principal): Promise<Project[]> {
    const out: Project[] = [];
    for (const id of by.projects.keys()) {
      const p = await this.d.store.of(PROJECT_KIND).get(id);
      if (p && (req.name === "" || p.name === req.name) && matchesLabels(p.labels, req.labels)) out.push(p);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** DeleteProject: refused while it holds VMs, volumes, images, networks, ports or security groups (but its default one); its role bindings, tokens, quota and default security group go with it. */
  async delete(id: string, budget: Budget): Promise<void> {
    if (id === DEFAULT_PROJECT_ID) throw new QuantixError("failed_precondition", "the default project cannot be deleted");
    const vms = await this.d.store.of(VM_KIND).list({ where: { project_id: id }, order: { field: "name", desc: false }, limit: 0 });
    if (vms.totalCount > 0) throw new QuantixError("failed_precondition", `project '${id}' still holds ${vms.totalCount} VM${vms.totalCount === 1 ? "" : "s"}: delete them first`);
    // What else a project holds that would be left without it: named, so the caller knows what to delete.
    const held: string[] = [];
    for (const [kind, what] of [[VOLUME_KIND, "volume"], [IMAGE_KIND, "image"], [VIRTUAL_NETWORK_KIND, "virtual network"], [PORT_KIND, "port"]] as const) {
      const n = (await this.d.store.of(kind as Kind<Resource>).list({ where: { project_id: id }, order: { field: "created_at", desc: false }, limit: 0 })).totalCount;
      if (n > 0) held.push(`${n} ${what}${n === 1 ? "" : "s"}`);
    }
    const groups: Resource[] = [];
    let otherGroups = 0;
    for await (const g of allOf(this.d.store.of(SECURITY_GROUP_KIND), { where: { project_id: id } })) {
      if (g.name === DEFAULT_SECURITY_GROUP) groups.push(g);
      else otherGroups++;
    }
    if (otherGroups > 0) held.push(`${otherGroups} security group${otherGroups === 1 ? "" : "s"} besides "${DEFAULT_SECURITY_GROUP}"`);
    if (held.length > 0) throw new QuantixError("failed_precondition", `project '${id}' still holds ${held.join(", ")}: delete them first`);
    const ops: TxOp[] = groups.map((g) => ({ op: "delete" as const, kind: kindOf(SECURITY_GROUP_KIND), object: g }));
    for await (const b of allOf(this.d.store.of(ROLE_BINDING_KIND), { where: { project_id: id } })) ops.push({ op: "delete", kind: kindOf(ROLE_BINDING_KIND), object: b });
    for await (const t of allOf(this.d.store.of(API_TOKEN_KIND), { where: { project_id: id } })) {
      ops.push({ op: "delete", kind: kindOf(API_TOKEN_KIND), object: t });
      const c = await this.d.store.of(CREDENTIAL_KIND).get(t.id);
      if (c) ops.push({ op: "delete", kind: kindOf(CREDENTIAL_KIND), object: c });
    }
    const quota = await this.d.store.of(QUOTA_KIND).get(id);
    if (quota) ops.push({ op: "delete", kind: kindOf(QUOTA_KIND), object: quota });
    await this.writer.delete(id, budget);
    if (ops.length > 0) await this.d.store.commit(ops);
  }

  /** SetRoleBinding: gives the role, replacing the principal's role in the project. Idempotent. */
  async setBinding(req: SetRoleBindingRequest): Promise<RoleBinding> {
    this.checkBindingRequest(req, true);
    await this.requireTargets(req);
    const now = timestampFromMs(this.d.clock.now());
    const existing = await this.bindingOf(req.projectId, req.principalId);
    let out: RoleBinding;
    if (!existing) {
      const b = create(RoleBindingSchema, { id: this.d.ids.newId(), projectId: req.projectId, principalType: req.principalType, principalId: req.principalId, role: req.role, createdAt: now, updatedAt: now });
      out = await this.d.store.of(ROLE_BINDING_KIND).create(b, { actor: "api" });
    } else {
      out = await this.d.store.of(ROLE_BINDING_KIND).update(existing.id, (cur) => (cur.role === req.role && cur.principalType === req.principalType ? undefined : { ...cur, role: req.role, principalType: req.principalType, updatedAt: now }), { actor: "api" });
    }
    await this.d.index.caughtUp(kindOf(ROLE_BINDING_KIND), out.resourceVersion);
    return out;
  }

  async deleteBinding(req: DeleteRoleBindingRequest): Promise<void> {
    this.checkBindingRequest(req, false);
    const b = await this.bindingOf(req.projectId, req.principalId);
    if (!b) throw new QuantixError("not_found", `'${req.principalId}' has no role in project '${req.projectId}'`);
    const [gone] = await this.d.store.commit([{ op: "delete", kind: kindOf(ROLE_BINDING_KIND), object: b }]);
    await this.d.index.caughtUp(kindOf(ROLE_BINDING_KIND), gone!.resourceVersion);
  }

  private checkBindingRequest(req: { projectId: string; principalType: PrincipalType; principalId: string; role?: Role }, needsRole: boolean): void {
    const v = new Violations();
    checkId(v, "project_id", req.projectId, PROJECT_ID_FORMAT);
    checkId(v, "principal_id", req.principalId, RESOURCE_ID_FORMAT);
    v.enumValue("principal_type", req.principalType, [PrincipalType.USER, PrincipalType.SERVICE_ACCOUNT], false);
    if (needsRole) v.enumValue("role", req.role ?? 0, [Role.READER, Role.MEMBER, Role.ADMIN], false);
    throwIfViolations(v.list);
  }

  private async requireTargets(req: SetRoleBindingRequest): Promise<void> {
    if (!(await this.d.store.of(PROJECT_KIND).get(req.projectId))) throw notFound("project", req.projectId);
    const exists = req.principalType === PrincipalType.USER ? await this.d.store.of(USER_KIND).get(req.principalId) : await this.d.store.of(SERVICE_ACCOUNT_KIND).get(req.principalId);
    if (!exists) throw notFound(req.principalType === PrincipalType.USER ? "user" : "service account", req.principalId);
  }

  private async bindingOf(projectId: string, principalId: string): Promise<RoleBinding | undefined> {
    const page = await this.d.store.of(ROLE_BINDING_KIND).list({ where: { project_id: projectId, principal_id: principalId }, order: { field: "created_at", desc: false }, limit: 1, countTotal: false });
    return page.items[0];
  }
}
