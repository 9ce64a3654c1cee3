import type { FieldViolation } from "./errors.js";

/** Collects every violation of a request so that all are reported at once. */
export class Violations {
  readonly list: FieldViolation[] = [];

  /** Records one violation. */
  add(field: string, reason: string, description: string): void {
    this.list.push({ field, reason, description });
  }

  /** Records REQUIRED for an empty value. Returns whether the value was present. */
  required(field: string, present: boolean, what = "is required"): boolean {
    if (!present) this.add(field, "REQUIRED", what);
    return present;
  }

  /** Checks an integer range, inclusive. */
  range(field: string, value: number | bigint, min: number, max: number, unit = ""): void {
    if (value < min || value > max) {
      const u = unit ? ` ${unit}` : "";
      this.add(field, "OUT_OF_RANGE", `must be between ${min} and ${max}${u}, got ${value}${u}`);
    }
  }

  /** Checks a string's length in characters (code points), inclusive. */
  length(field: string, value: string, min: number, max: number): boolean {
    const n = [...value].length;
    if (n < min || n > max) {
      this.add(field, "INVALID_LENGTH", `must be ${min}-${max} characters long, got ${n}`);
      return false;
    }
    return true;
  }

  /** Checks a string against a pattern, described in words for the user. */
  pattern(field: string, value: string, re: RegExp, description: string): boolean {
    if (!re.test(value)) {
      this.add(field, "INVALID_FORMAT", description);
      return false;
    }
    return true;
  }

  /** Checks that a number is one of an enum's declared values (not UNSPECIFIED). */
  enumValue(field: string, value: number, known: readonly number[], allowUnspecified = true): void {
    if ((value === 0 && !allowUnspecified) || (value !== 0 && !known.includes(value))) {
      this.add(field, "INVALID_ENUM", `unknown value ${value}`);
    }
  }
}

/** Names of resources (VMs, disks, NICs): a letter, then letters, digits, '-' or '_'. */
export const NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_-]*$/;
/** Ids of resources and references to them (resource/ids.ts: RESOURCE_ID_FORMAT). */
export const ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
/** Project ids (resource/ids.ts: PROJECT_ID_FORMAT). */
export const PROJECT_ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$/;
/** ID_PATTERN in words. */
export const ID_DESCRIPTION = "must be an id: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit";
/** Control characters (including newlines) never belong in names, paths or command lines. */
export const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

/** Validates a label map: at most 50 labels, keys 1-63 characters, values at most 255. */
export function validateLabels(v: Violations, field: string, labels: Record<string, string>): void {
  const keys = Object.keys(labels);
  if (keys.length > 50) v.add(field, "TOO_MANY", `at most 50 labels, got ${keys.length}`);
  for (const key of keys) {
    const path = `${field}[${JSON.stringify(key)}]`;
    if (key.length < 1 || key.length > 63) {
      v.add(path, "INVALID_LENGTH", `label keys must be 1-63 characters long, got ${key.length}`);
    } else if (!/^[a-zA-Z0-9]([a-zA-Z0-9._/-]*[a-zA-Z0-9])?$/.test(key)) {
      v.add(path, "INVALID_FORMAT", "label keys are letters, digits, '.', '_', '-', '/', starting and ending with a letter or digit");
    }
    const value = labels[key] ?? "";
    if (value.length > 255) {
      v.add(path, "INVALID_LENGTH", `label values must be at most 255 characters long, got ${value.length}`);
    } else if (CONTROL_CHARS.test(value)) {
      v.add(path, "INVALID_FORMAT", "label values must not contain control characters");
    }
  }
}

/** Validates an optional reference id (empty allowed unless required). */
export function validateRef(v: Violations, field: string, id: string, required = false): void {
  if (id === "") {
    if (required) v.add(field, "REQUIRED", "is required");
    return;
  }
  v.pattern(field, id, ID_PATTERN, ID_DESCRIPTION);
}
