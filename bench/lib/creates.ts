import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PowerState, VirtualMachineSchema, VmStatus_State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { CreateVMRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { MemoryStore } from "@quantix/server";
import { envelope } from "./grpc-frame.js";
import { connect, exchange, grpcHeaders, grpcStatus } from "./h2-client.js";
import { nowMs } from "./stats.js";
import { VM_KIND } from "@quantix/core";

const PROJECT = "00000000-0000-0000-0000-000000000001";
const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
const CREATE_VM = "/Quantixkvm.compute.v1.VMService/CreateVM";

/** Same-length names, so every stored VM (and every watch message) has the same size. */
export const vmName = (prefix: string, i: number): string => `${prefix}-${String(i).padStart(6, "0")}`;

/** A write-rate measurement. */
export interface CreateRate {
  readonly perSec: number;
  readonly timed: number;
  readonly bad: number;
  readonly ms: number;
}

/** How createOverGrpc loads a server. */
export interface CreateLoad {
  /** Calls in flight (64). */
  readonly concurrency?: number;
  /** Stops issuing after this long (60 s). */
  readonly budgetMs?: number;
  /** The first VM's number in its name (0): a second call on the same server names its VMs after the first's. */
  readonly first?: number;
}

/**
 * CreateVM over gRPC (h2c, one connection, `concurrency` calls in flight) with pre-encoded
 * requests: the first `warmup` are not timed. Stops issuing at `budgetMs`.
 */
export async function createOverGrpc(url: string, total: number, warmup: number, load: CreateLoad = {}): Promise<CreateRate> {
  const { concurrency = 64, budgetMs = 60_000, first = 0 } = load;
  const bodies = Array.from({ length: total }, (_, i) =>
    envelope(toBinary(CreateVMRequestSchema, create(CreateVMRequestSchema, { name: vmName("bench", first + i), projectId: PROJECT, spec: SPEC }))),
  );
  const session = await connect(url);
  const deadline = nowMs() + budgetMs;
  let bad = 0;
  const run = async (from: number, to: number) => {
    let next = from;
    const worker = async () => {
      while (next < to && nowMs() < deadline) {
        const x = await exchange(session, grpcHeaders(CREATE_VM), bodies[next++]!).catch(() => undefined);
        if (!x || x.status !== 200 || grpcStatus(x) !== "0") bad++;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return next - from;
  };
  try {
    await run(0, warmup);
    bad = 0;
    const t0 = nowMs();
    const timed = await run(warmup, total);
    const ms = nowMs() - t0;
    return { perSec: (timed / ms) * 1000, timed, bad, ms };
  } finally {
    session.close();
  }
}

/**
 * The store's own write rate: MemoryStore.vms.create, in this process, on the objects
 * VmService.create would build for the same requests (new id, STOPPED, generation 1).
 */
export async function createInStore(total: number, warmup: number): Promise<CreateRate> {
  const store = new MemoryStore();
  const now = timestampFromMs(Date.now());
  const vms: VirtualMachine[] = Array.from({ length: total }, (_, i) =>
    create(VirtualMachineSchema, {
      id: randomUUID(),
      name: vmName("bench", i),
      projectId: PROJECT,
      spec: { ...SPEC, desiredPowerState: PowerState.STOPPED },
      status: { state: VmStatus_State.STOPPED },
      createdAt: now,
      updatedAt: now,
      generation: 1n,
    }),
  );
  for (let i = 0; i < warmup; i++) await store.of(VM_KIND).create(vms[i]!);
  const t0 = nowMs();
  for (let i = warmup; i < total; i++) await store.of(VM_KIND).create(vms[i]!);
  const ms = nowMs() - t0;
  return { perSec: ((total - warmup) / ms) * 1000, timed: total - warmup, bad: 0, ms };
}
