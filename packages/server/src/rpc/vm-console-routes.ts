import { create } from "@bufbuild/protobuf";
import {
  ConsoleChunkSchema,
  ConsoleEventSchema,
  ConsoleRoleKind,
  type ConsoleEvent,
  type ConsoleInput,
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

/** Largest AttachConsole input message, in bytes (the agent enforces the same). */
export const MAX_CONSOLE_INPUT_BYTES = 4096;

const ROLE = { writer: ConsoleRoleKind.WRITER, viewer: ConsoleRoleKind.VIEWER, displaced: ConsoleRoleKind.DISPLACED } as const;

/**
 * AttachConsole: proxied to the VM's node's agent, which arbitrates the writer role (one
 * place per VM, whatever replica each client came through). Input messages are checked
 * here too, so a bad one is refused with its field before it travels.
 */
export async function* attachConsole(power: VmPowerService, input: AsyncIterable<ConsoleInput>, signal: AbortSignal): AsyncGenerator<ConsoleEvent> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done || first.value.kind.case !== "attach") {
    throw new QuantixError("failed_precondition", "the first AttachConsole message must be attach (which VM, and whether to write); input comes after it");
  }
  const a = first.value.kind.value;
  if (a.tailBytes < 0 || a.tailBytes > MAX_TAIL) {
    throw new QuantixError("invalid_argument", `attach.tail_bytes: must be between 0 and ${MAX_TAIL}, got ${a.tailBytes}`, [{ field: "attach.tail_bytes", reason: "OUT_OF_RANGE", description: `must be between 0 and ${MAX_TAIL}` }]);
  }
  const { vm, console } = await power.console(a.vmId);
  if (!console.attach) throw new QuantixError("failed_precondition", `VM '${vm.id}' runs on a node whose hypervisor offers no interactive console sessions`);
  // A bad input message ends the agent call and is the error this stream ends with.
  const ac = new AbortController();
  const stop = () => ac.abort();
  signal.addEventListener("abort", stop);
  let bad: QuantixError | undefined;
  const data = async function* (): AsyncGenerator<Uint8Array> {
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      const k = r.value.kind;
      if (k.case !== "data") bad = new QuantixError("invalid_argument", `data: after attach every AttachConsole message carries input; got ${k.case ?? "an empty message"}`, [{ field: "data", reason: "REQUIRED", description: "input messages carry data" }]);
      else if (k.value.length === 0 || k.value.length > MAX_CONSOLE_INPUT_BYTES) bad = new QuantixError("invalid_argument", `data: must hold 1-${MAX_CONSOLE_INPUT_BYTES} bytes, got ${k.value.length}`, [{ field: "data", reason: "OUT_OF_RANGE", description: `1-${MAX_CONSOLE_INPUT_BYTES} bytes per message` }]);
      if (bad) {
        ac.abort();
        return;
      }
      yield (k as { value: Uint8Array }).value;
    }
  };
  try {
    for await (const e of console.attach(vm.id, { tailBytes: a.tailBytes, fromOffset: a.fromOffset, write: a.write, force: a.force }, data(), ac.signal)) {
      yield create(
        ConsoleEventSchema,
        e.kind === "output"
          ? { kind: { case: "output", value: { data: e.data, offset: e.offset } } }
          : { kind: { case: "role", value: { role: ROLE[e.role], writerPresent: e.writerPresent, message: e.message, droppedBytes: e.droppedBytes } } },
      );
    }
  } finally {
    signal.removeEventListener("abort", stop);
  }
  if (bad) throw bad;
}
