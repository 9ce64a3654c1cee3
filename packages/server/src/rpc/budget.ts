import type { HandlerContext } from "@connectrpc/connect";
import type { WaitBudget } from "../services/vm-power.js";

/**
 * How long a power action may wait for the node: until shortly before the client's
 * deadline (so the answer still arrives), and never longer than the server's default.
 */
export function budgetOf(ctx: HandlerContext, defaultDeadlineMs: number): WaitBudget {
  const remaining = ctx.timeoutMs();
  // Leave a fifth of the client's time (at least 100 ms, at most 1 s) for the answer to travel.
  const margin = remaining === undefined ? 0 : Math.min(1000, Math.max(100, remaining / 5));
  const ms = remaining === undefined ? defaultDeadlineMs : Math.min(defaultDeadlineMs, Math.max(0, remaining - margin));
  return { ms, signal: ctx.signal };
}
