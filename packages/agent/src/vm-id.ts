/**
 * The one VM id pattern of the agent: vm.proto's (letters, digits, '_' and '-', at most
 * 63, starting with a letter or digit), which UUIDs also match. Ids become file, directory
 * and socket names in every backend, so the manager's validation and each backend's
 * state directory use this same pattern. No '.', so no id can be "." or "..".
 */
export const VM_ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$/;
