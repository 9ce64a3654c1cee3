import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { StreamConsoleRequestSchema, VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { VmManager } from "../vm-manager.js";
import { streamConsole } from "./console-routes.js";

// A 64-byte console buffer and a tick line every 2 ms: a reader that pauses for a few
// ticks falls behind the buffer.
const backend = new SimulatedBackend({ bootMs: 1, consoleIntervalMs: 2, consoleBufferBytes: 64 });
const manager = new VmManager({ backend });
await manager.start();
// The simulator's console ticker does not hold the process open; this does, while a test waits on it.
const keepAlive = setInterval(() => undefined, 1000);
after(async () => {
  clearInterval(keepAlive);
  await backend.close();
});

const config = create(VmConfigSchema, { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1024n * 1024n }, boot: { kernelPath: "/boot/vmlinuz" } });

async function bootedVm(vmId: string): Promise<void> {
  await manager.create(vmId, config);
  await manager.boot(vmId);
}

function open(vmId: string, req: { tailBytes?: number; fromOffset?: bigint }) {
  const ac = new AbortController();
  // streamConsole reads only the signal of the handler context.
  const ctx = { signal: ac.signal } as unknown as HandlerContext;
  const it = streamConsole(manager, create(StreamConsoleRequestSchema, { vmId, ...req }), ctx)[Symbol.asyncIterator]();
  return { next: async () => (await it.next()).value!, close: async () => (ac.abort(), await it.return(undefined)) };
}

test("StreamConsole: a reader that falls behind the buffer sees the dropped bytes as an offset jump", async () => {
  const vmId = "slow-reader";
  await bootedVm(vmId);
  const s = open(vmId, {});
  try {
    const first = await s.next();
    const end = Number(first.offset) + first.data.length;
    // Stop reading until the buffer no longer holds the byte the reader would need next.
    await until(async () => ((await backend.consolePosition(vmId)).start > end ? true : undefined), "the buffer to move past the reader", 10_000, 5);
    const second = await s.next();
    const pos = await backend.consolePosition(vmId);
    assert.ok(Number(second.offset) > end, `offset ${second.offset} must jump past ${end}`);
    assert.ok(Number(second.offset) + second.data.length <= pos.end);
    // The bytes are the ones the offset names: the same as the buffer holds there.
    const tail = await backend.consoleTail(vmId, 64);
    const at = Number(second.offset) - (pos.end - tail.length);
    if (at >= 0) assert.deepEqual(second.data.subarray(0, Math.min(second.data.length, tail.length - at)), tail.subarray(at, at + second.data.length));
  } finally {
    await s.close();
  }
});

test("StreamConsole: a reader that keeps up gets contiguous offsets from tail_bytes on", async () => {
  const vmId = "fast-reader";
  await bootedVm(vmId);
  await until(async () => ((await backend.consolePosition(vmId)).end > 16 ? true : undefined), "some output");
  const s = open(vmId, { tailBytes: 16 });
  try {
    const first = await s.next();
    assert.equal(first.data.length >= 16, true);
    const second = await s.next();
    assert.equal(Number(second.offset), Number(first.offset) + first.data.length);
  } finally {
    await s.close();
  }
});

test("StreamConsole: a from_offset no longer buffered starts at the oldest byte, and says where", async () => {
  const vmId = "old-offset";
  await bootedVm(vmId);
  await until(async () => ((await backend.consolePosition(vmId)).start > 10 ? true : undefined), "the buffer to drop its first bytes");
  const s = open(vmId, { fromOffset: 1n });
  try {
    const first = await s.next();
    assert.ok(Number(first.offset) > 1, `offset ${first.offset} shows the skip`);
  } finally {
    await s.close();
  }
});
