import type { FieldViolation } from "../errors.js";
import { CONTROL_CHARS, validateLabels, Violations } from "../violations.js";

/** Limits every kind's common fields share. */
export const COMMON_LIMITS = { descriptionMax: 1024 } as const;

/**
 * The rules of the fields many kinds share, checked by the resource writer for any kind
 * whose message has them, so that no service repeats them: `labels` (at most 50; keys
 * 1-63 characters of letters, digits, '.', '_', '-', '/'; values at most 255, no control
 * characters) and `description` (at most 1024 characters, no control characters other
 * than newlines and tabs).
 */
export function commonViolations(o: { labels?: Record<string, string>; description?: string }): FieldViolation[] {
  const v = new Violations();
  if (o.labels) validateLabels(v, "labels", o.labels);
  if (o.description !== undefined) {
    if ([...o.description].length > COMMON_LIMITS.descriptionMax) v.add("description", "INVALID_LENGTH", `must be at most ${COMMON_LIMITS.descriptionMax} characters long`);
    else if (CONTROL_CHARS.test(o.description.replace(/[\n\t]/g, ""))) v.add("description", "INVALID_FORMAT", "must not contain control characters other than newlines and tabs");
  }
  return v.list;
}
