import { create } from "@bufbuild/protobuf";
import {
  ConsoleChunkSchema,
  GetConsoleOutputResponseSchema,
  type ConsoleChunk,
  type GetConsoleOutputRequest,
  type GetConsoleOutputResponse,
  type StreamConsoleRequest,
} from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { QuantixError } from "@quantix/core";
import type { VmPowerService } from "../services/vm-power.js";

const MAX_TAIL = 1024 * 1024;

/** GetConsoleOutput: the newest console bytes, proxied from the VM's node. */
export async function getConsoleOutput(power: VmPowerService, req: GetConsoleOutputRequest): Promise<GetConsoleOutputResponse> {
  if (req.tailBytes < 0 || req.tailBytes > MAX_TAIL) {
    throw new QuantixError("invalid_argument", `tail_bytes: must be between 1 and ${MAX_TAIL} (0 means 65536), got ${req.tailBytes}`, [
      { field: "tail_bytes", reason: "OUT_OF_RANGE", description: `must be between 1 and ${MAX_TAIL} (0 means 65536)` },
    ]);
  }
  const { vm, console } = await power.console(req.vmId);
  const out = await console.output(vm.id, req.tailBytes);
  return create(GetConsoleOutputResponseSchema, { data: out.data, truncated: out.truncated });
}

/** StreamConsole: new console output from the VM's node until the client cancels or the VM is deleted. */
export async function* streamConsole(power: VmPowerService, req: StreamConsoleRequest, signal: AbortSignal): AsyncGenerator<ConsoleChunk> {
  const { vm, console } = await power.console(req.vmId);
  for await (const data of console.follow(vm.id, signal)) yield create(ConsoleChunkSchema, { data });
}
