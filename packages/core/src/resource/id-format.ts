import { ID_DESCRIPTION, ID_PATTERN, PROJECT_ID_PATTERN, type Violations } from "../violations.js";

/** What ids of one sort look like: checked before an id reaches a store or an error message. */
export interface IdFormat {
  readonly pattern: RegExp;
  /** The rule in words, for INVALID_ARGUMENT. */
  readonly description: string;
}

/**
 * Ids of resources (VMs, nodes, migrations, events, and references to them): what the
 * control plane mints (UUIDs), and any other id it may hold (the agent's node ids, test
 * and demo ids): 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.
 * No control characters (a NUL makes the SQL stores fail), nothing that needs escaping in
 * a message or a header, and short enough to echo.
 */
export const RESOURCE_ID_FORMAT: IdFormat = {
  pattern: ID_PATTERN,
  description: ID_DESCRIPTION,
};

/** Project ids (projects are named, not minted, until an identity service exists): 1-64 letters, digits, '_' or '-'. */
export const PROJECT_ID_FORMAT: IdFormat = {
  pattern: PROJECT_ID_PATTERN,
  description: "must be a project id: 1-64 letters, digits, '-' or '_', starting with a letter or digit",
};

/** Checks one id: REQUIRED when empty and required; INVALID_FORMAT when it does not match. */
export function checkId(v: Violations, path: string, id: string, format: IdFormat = RESOURCE_ID_FORMAT, required = true): void {
  if (id === "") {
    if (required) v.add(path, "REQUIRED", "is required");
    return;
  }
  v.pattern(path, id, format.pattern, format.description);
}
