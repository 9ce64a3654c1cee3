import { PrincipalType, Role } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import type { ProjectRole, PrincipalKind } from "@quantix/core";

const RANK: Record<ProjectRole, number> = { reader: 1, member: 2, admin: 3 };

/** Whether `have` includes `need` (admin ⊃ member ⊃ reader). */
export function roleIncludes(have: ProjectRole | undefined, need: ProjectRole): boolean {
  return have !== undefined && RANK[have] >= RANK[need];
}

/** The API's Role as a ProjectRole (undefined for ROLE_UNSPECIFIED). */
export function roleOf(r: Role): ProjectRole | undefined {
  return r === Role.ADMIN ? "admin" : r === Role.MEMBER ? "member" : r === Role.READER ? "reader" : undefined;
}

/** A ProjectRole as the API's Role. */
export function apiRole(r: ProjectRole): Role {
  return r === "admin" ? Role.ADMIN : r === "member" ? Role.MEMBER : Role.READER;
}

/** The lesser of two roles. */
export function minRole(a: ProjectRole, b: ProjectRole): ProjectRole {
  return RANK[a] <= RANK[b] ? a : b;
}

/** The principal kind of a PrincipalType. */
export function kindOfType(t: PrincipalType): PrincipalKind {
  return t === PrincipalType.SERVICE_ACCOUNT ? "service-account" : "user";
}
