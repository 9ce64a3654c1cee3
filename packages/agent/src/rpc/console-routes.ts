import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  ConsoleChunkSchema,
  GetConsoleOutputResponseSchema,
  type ConsoleChunk,
  type GetConsoleOutputRequest,
  type GetConsoleOutputResponse,
  type StreamConsoleRequest,
} from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import type { VmManager } from "../vm-manager.js";

const MAX_TAIL = 1024 * 1024;
const DEFAULT_TAIL = 64 * 1024;

function checkTail(value: number, min: number, zeroMeans: string): void {
  if (value < 0 || value > MAX_TAIL || (value !== 0 && value < min)) {
    throw new QuantixError("invalid_argument", `tail_bytes: must be between ${min} and ${MAX_TAIL} (0 means ${zeroMeans}), got ${value}`, [{ field: "tail_bytes", reason: "OUT_OF_RANGE", description: `must be between ${min} and ${MAX_TAIL}` }]);
  }
}

/** GetConsoleOutput: the newest bytes, their position, and whether older output was dropped. */
export async function getConsoleOutput(m: VmManager, req: GetConsoleOutputRequest): Promise<GetConsoleOutputResponse> {
  checkTail(req.tailBytes, 1, String(DEFAULT_TAIL));
  await m.consoleReady(req.vmId);
  const b = m.backend;
  // Position first, then the bytes, with no I/O turn between them: output that arrives
  // in between would otherwise shift the offset.
  const pos = b.consolePosition ? await b.consolePosition(req.vmId) : undefined;
  const data = await b.consoleTail(req.vmId, req.tailBytes || DEFAULT_TAIL);
  return create(GetConsoleOutputResponseSchema, {
    data,
    truncated: pos ? pos.start > 0 : false,
    offset: pos ? BigInt(pos.end - data.length) : 0n,
  });
}

/**
 * StreamConsole: the requested buffered bytes, then new output, until the VM is deleted
 * (the backend's follow ends) or the client cancels. The follower is registered before
 * the tail is read, so no output falls between them.
 */
export async function* streamConsole(m: VmManager, req: StreamConsoleRequest, ctx: HandlerContext): AsyncGenerator<ConsoleChunk> {
  checkTail(req.tailBytes, 0, "new output only");
  await m.consoleReady(req.vmId);
  const b = m.backend;
  if (req.fromOffset > 0n && !b.consolePosition) {
    throw new QuantixError("failed_precondition", `from_offset needs console positions, which the ${b.type} backend does not report; use tail_bytes`);
  }
  const follow = b.followConsole(req.vmId, ctx.signal)[Symbol.asyncIterator]();
  const first = follow.next();
  const pos = b.consolePosition ? await b.consolePosition(req.vmId) : { start: 0, end: 0 };
  let want = req.tailBytes;
  if (req.fromOffset > 0n) {
    const from = Number(req.fromOffset);
    if (from > pos.end) {
      await follow.return?.();
      throw new QuantixError("out_of_range", `from_offset ${from} is past the end of the console output (${pos.end})`);
    }
    want = pos.end - Math.max(from, pos.start);
  }
  let offset = pos.end;
  try {
    if (want > 0) {
      const data = await b.consoleTail(req.vmId, want);
      if (data.length > 0) yield create(ConsoleChunkSchema, { data, offset: BigInt(pos.end - data.length) });
    }
    for (let next = await first; !next.done; next = await follow.next()) {
      yield create(ConsoleChunkSchema, { data: next.value, offset: BigInt(offset) });
      offset += next.value.length;
    }
  } finally {
    await follow.return?.();
  }
}
