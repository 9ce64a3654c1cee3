import { Code } from "@connectrpc/connect";

/** Labels by code, made once: a call's log line and metrics ask on every call. */
const LABELS = new Map<number, string>();

/**
 * "ok" for success, "not_found" for Code.NotFound: the names the API's error vocabulary
 * uses, one spelling for log lines and metric labels.
 */
export function codeLabel(code: Code | 0): string {
  let label = LABELS.get(code);
  if (label === undefined) {
    label = code === 0 ? "ok" : (Code[code] ?? `code_${code}`).replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
    LABELS.set(code, label);
  }
  return label;
}
