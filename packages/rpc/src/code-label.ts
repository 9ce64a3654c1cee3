import { Code } from "@connectrpc/connect";

/**
 * "ok" for success, "not_found" for Code.NotFound: the names the API's error vocabulary
 * uses, one spelling for log lines and metric labels.
 */
export function codeLabel(code: Code | 0): string {
  if (code === 0) return "ok";
  return (Code[code] ?? `code_${code}`).replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}
