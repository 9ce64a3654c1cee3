import assert from "node:assert/strict";
import { ConnectError } from "@connectrpc/connect";
import { QuantixError } from "@quantix/core";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";

/** The error a call rejected with, as a ConnectError; fails the test if the call succeeded. */
export async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("the call succeeded");
}

/** The QuantixError a call of inner code rejected with; fails the test if it succeeded or threw something else. */
export async function quantixRejection(p: Promise<unknown>): Promise<QuantixError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof QuantixError, String(err));
    return err;
  }
  assert.fail("the call succeeded");
}

/** Whether a watch has delivered its SYNCED marker among `updates`. */
export function synced(updates: readonly { type: EventType }[]): boolean {
  return updates.some((u) => u.type === EventType.SYNCED);
}
