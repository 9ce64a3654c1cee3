import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { StoragePoolSchema, StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { NODE_KIND, QuantixError, STORAGE_POOL_KIND, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { FakeClock } from "@quantix/testing";
import { MemoryStore } from "../store/memory-store.js";
import type { NodeStorage } from "../storage/node-storage.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { storagePoolController } from "./storage-pool-controller.js";

const GIB = 1n << 30n;

test("a node that cannot be reached keeps its last measurement in the pool's capacity (a missed heartbeat does not make the pool look empty)", async () => {
  const clock = new FakeClock();
  const store: Store = new MemoryStore({ clock });
  const log: Logger = { log: () => undefined };
  let reachable = true;
  const storage = {
    kind: "fake",
    ensurePool: async () => {
      if (!reachable) throw new QuantixError("unavailable", "node 'n1' is unreachable");
      return { capacityBytes: 100n * GIB, availableBytes: 80n * GIB };
    },
  } as unknown as NodeStorage;
  const storages = { of: () => storage } as unknown as NodeStorages;
  await store.of(NODE_KIND).create(create(NodeSchema, { id: "n1" }));
  await store.of(STORAGE_POOL_KIND).create(create(StoragePoolSchema, { id: "p1", name: "p1", generation: 1n, spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: ["n1"] }, status: {} }));
  const run = async () => {
    const c = storagePoolController({ store, storages, clock, timers: clock, log });
    await c.start();
    await c.idle();
    await c.stop();
    return (await store.of(STORAGE_POOL_KIND).get("p1"))!.status!;
  };
  const measured = await run();
  assert.equal(measured.state, StoragePoolState.READY);
  assert.equal(measured.capacityBytes, 100n * GIB);
  assert.equal(measured.provisionableBytes, 100n * GIB);

  reachable = false;
  const lost = await run();
  assert.equal(lost.state, StoragePoolState.UNAVAILABLE);
  assert.match(lost.errorMessage, /node 'n1': node 'n1' is unreachable/);
  assert.equal(lost.nodes[0]?.available, false);
  assert.equal(lost.capacityBytes, 100n * GIB, "the last measurement stays");
  assert.equal(lost.provisionableBytes, 100n * GIB, "so a volume larger than the pool is still refused");
});
