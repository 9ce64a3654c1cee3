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

function checkTail(value: number, min: number, zeroMeans: string, field = ""): void {
  if (value < 0 || value > MAX_TAIL || (value !== 0 && value < min)) {
    throw new QuantixError("invalid_argument", `${field}tail_bytes: must be between ${min} and ${MAX_TAIL} (0 means ${zeroMeans}), got ${value}`, [{ field: `${field}tail_bytes`, reason: "OUT_OF_RANGE", description: `must be between ${min} and ${MAX_TAIL}` }]);
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
 * (the backend's follow ends) or the client cancels. One follower from one offset serves
 * both, so nothing falls between the tail and the new output, and every chunk carries the
 * backend's own offset: when a slow reader falls behind the buffer, the next chunk's
 * offset jumps past the end of the previous one by exactly what was dropped.
 */
export async function* streamConsole(m: VmManager, req: StreamConsoleRequest, ctx: HandlerContext): AsyncGenerator<ConsoleChunk> {
  const from = await consoleStart(m, req.vmId, req.tailBytes, req.fromOffset, "");
  for await (const chunk of m.backend.followConsole(req.vmId, ctx.signal, from)) {
    if (chunk.data.length > 0) yield create(ConsoleChunkSchema, { data: chunk.data, offset: BigInt(chunk.offset) });
  }
}

/**
 * Checks a follow's start (StreamConsole's and AttachConsole's tail_bytes/from_offset,
 * their field names prefixed by `field`) and returns the offset to follow from
 * (undefined: the backend's end, new output only).
 */
export async function consoleStart(m: VmManager, vmId: string, tailBytes: number, fromOffset: bigint, field: string): Promise<number | undefined> {
  checkTail(tailBytes, 0, "new output only", field);
  await m.consoleReady(vmId);
  const b = m.backend;
  if (!b.consolePosition && (fromOffset > 0n || tailBytes > 0)) {
    throw new QuantixError("failed_precondition", `${field}from_offset and ${field}tail_bytes need console positions, which the ${b.type} backend does not report`);
  }
  if (!b.consolePosition) return undefined;
  const pos = await b.consolePosition(vmId);
  if (fromOffset > 0n) {
    if (fromOffset > BigInt(pos.end)) throw new QuantixError("out_of_range", `${field}from_offset ${fromOffset} is past the end of the console output (${pos.end})`);
    return Number(fromOffset);
  }
  return Math.max(pos.start, pos.end - tailBytes);
}
