import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { GetVMRequestSchema, UpdateVMRequestSchema, VmUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { EnvelopeReader, envelope, unenvelope } from "./grpc-frame.js";
import { connect, exchange, grpcHeaders, grpcStatus } from "./h2-client.js";
import { RawH2 } from "./raw-h2.js";
import { rssBytes } from "./proc.js";
import { nowMs, percentile, sleep } from "./stats.js";

export const WATCH_VMS = "/Quantixkvm.compute.v1.VMService/WatchVMs";
const UPDATE_VM = "/Quantixkvm.compute.v1.VMService/UpdateVM";
/** SYNCED carries no VM, so its payload is a few bytes; every VM-bearing update is far larger. */
export const SMALL = 32;

/** Whether an envelope payload is the SYNCED marker (decoding only small ones). */
export const isSynced = (payload: Buffer | undefined): boolean => payload !== undefined && fromBinary(VmUpdateSchema, payload).type === EventType.SYNCED;

/** GetVM over gRPC on an open session. */
async function getVm(session: Parameters<typeof exchange>[0], id: string): Promise<VirtualMachine> {
  const x = await exchange(session, grpcHeaders("/Quantixkvm.compute.v1.VMService/GetVM"), envelope(toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id }))));
  const msgs = unenvelope(x.body);
  if (grpcStatus(x) !== "0" || msgs.length !== 1) throw new Error(`GetVM failed on our server: grpc-status ${grpcStatus(x)}`);
  return fromBinary(VirtualMachineSchema, msgs[0]!);
}

/**
 * The VM `id` as our server holds it (GetVM over gRPC), base64 of its bytes: the bare
 * fan-out (servers/bare-fanout.ts) sends it in its updates, so both write the same bytes
 * per watcher but for the description.
 */
export async function demoVm(url: string, id: string): Promise<string> {
  const session = await connect(url);
  try {
    return Buffer.from(toBinary(VirtualMachineSchema, await getVm(session, id))).toString("base64");
  } finally {
    session.close();
  }
}

/**
 * Waits until nothing writes the VM `id` for `quietMs` (its resource version unchanged, read
 * with GetVM): a control plane that has just started may still be writing the demo VMs'
 * status (its controllers' first passes, slower on PostgreSQL), and such a write arriving
 * after SYNCED is an extra envelope that fanout()'s count would take for a bench write.
 * Our servers only: the bare fan-out answers GetVM with no resource version of its own.
 */
export async function quietVm(url: string, id: string, quietMs = 2000, budgetMs = 60_000): Promise<void> {
  const session = await connect(url);
  try {
    const deadline = nowMs() + budgetMs;
    let last = -1n;
    let since = nowMs();
    while (nowMs() - since < quietMs) {
      if (nowMs() > deadline) throw new Error(`VM ${id} was still being written after ${budgetMs / 1000} s; the fan-out counts would be wrong`);
      const rv = (await getVm(session, id)).resourceVersion;
      if (rv !== last) {
        last = rv;
        since = nowMs();
      }
      await sleep(200);
    }
  } finally {
    session.close();
  }
}

/** What N watchers on one connection (or spread over several) cost and how fast they hear about writes. */
export interface FanoutResult {
  readonly streams: number;
  /** HTTP/2 connections the watchers were spread over (round robin). */
  readonly connections: number;
  readonly synced: number;
  readonly openMs: number;
  /** CPU this harness spent while opening (user + system): near openMs means the client limited it. */
  readonly clientCpuOpenMs: number;
  readonly rssPerStreamBytes: number;
  /** Write acknowledged (UpdateVM response on another connection) to delivery, per watcher and write. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** The same deliveries timed from when the UpdateVM request was sent. */
  readonly p50FromSendMs: number;
  readonly p99FromSendMs: number;
  /** UpdateVM round trips (request sent to response received) while N watchers listen. */
  readonly ackMs: readonly number[];
  readonly samples: number;
  /** Deliveries that never came, envelopes beyond the writes, stream errors. */
  readonly missing: number;
  readonly extra: number;
  readonly errors: number;
  /** Watcher 0 decoded every update: each answers its write, in order. */
  readonly inOrder: boolean;
}

/**
 * Opens `n` WatchVMs streams on ONE HTTP/2 connection (or `connections` of them, the
 * streams split evenly), waits for every SYNCED, then makes `warmup` untimed and `writes`
 * timed UpdateVM calls on a second connection, one after another, and times each write's
 * acknowledgement to its arrival at every watcher. Envelopes are counted, not decoded:
 * after SYNCED the k-th envelope answers the k-th write (watcher 0 decodes all to check
 * that). The untimed first write is the first either server makes after its watchers
 * opened, on code paths it has not run yet; each server gets one alike.
 */
export async function fanout(server: { url: string; pid: number }, n: number, vmId: string, writes = 5, budgetMs = 90_000, connections = 1, warmup = 0): Promise<FanoutResult> {
  const deadline = nowMs() + budgetMs;
  const total = warmup + writes;
  const synced = new Uint8Array(n);
  const count = new Int32Array(n);
  const arrival = new Float64Array(n * total).fill(NaN);
  const delivered = new Int32Array(total);
  const decoded: Buffer[] = [];
  const times = new Float64Array(n);
  let syncedCount = 0;
  let openEnd = 0;
  let extra = 0;
  let done = false;
  const readers = Array.from({ length: n }, (_, i) =>
    new EnvelopeReader(
      (_len, payload) => {
        const t = times[i]!;
        if (!synced[i]) {
          if (!isSynced(payload)) return;
          synced[i] = 1;
          if (++syncedCount === n) openEnd = t;
          return;
        }
        const k = count[i]++;
        if (k >= total) return void extra++;
        arrival[i * total + k] = t;
        delivered[k]!++;
        if (i === 0 && payload) decoded.push(payload);
      },
      (len) => (synced[i] ? i === 0 : len < SMALL),
    ),
  );
  // The watchers share one connection (or `connections`), read by a raw HTTP/2 client (see raw-h2.ts);
  // connection c carries watchers c*per .. c*per+per-1.
  const per = Math.ceil(n / connections);
  const sessions = await Promise.all(
    Array.from({ length: connections }, (_, c) =>
      RawH2.connect(server.url, (j, data, t) => {
        const i = c * per + j;
        times[i] = t;
        readers[i]?.push(data);
      }),
    ),
  );
  const u = new URL(server.url);
  await sleep(200);
  const rssBefore = rssBytes(server.pid);
  const t0 = nowMs();
  const cpu0 = process.cpuUsage();
  sessions.forEach((session, c) => session.open(Math.max(0, Math.min(per, n - c * per)), { ":method": "POST", ":scheme": "http", ":path": WATCH_VMS, ":authority": u.host, "content-type": "application/grpc", te: "trailers" }, envelope(new Uint8Array(0))));
  const sessionErrors = () => sessions.reduce((sum, x) => sum + x.errors, 0);
  const errorsNow = () => (done ? 0 : sessionErrors());
  const until = async (cond: () => boolean) => {
    while (!cond() && nowMs() < deadline) await sleep(2);
    return cond();
  };
  await until(() => syncedCount === n || errorsNow() > 0);
  const openMs = syncedCount === n ? openEnd - t0 : NaN;
  const cpu = process.cpuUsage(cpu0);
  const clientCpuOpenMs = (cpu.user + cpu.system) / 1000;
  await sleep(100);
  const rssPerStreamBytes = (rssBytes(server.pid) - rssBefore) / n;
  // Connected only now: a connection that sent no request while 10,000 streams opened (20 s
  // and more on a loaded machine) is closed by the server's session guard (headers timeout).
  const writer = await connect(server.url);

  const latencies: number[] = [];
  const fromSend: number[] = [];
  const ackMs: number[] = [];
  const expected: string[] = [];
  for (let k = 0; k < total && syncedCount === n; k++) {
    const description = `bench fan-out ${n} write ${k + 1} at ${new Date().toISOString()}`;
    expected.push(description);
    const req = create(UpdateVMRequestSchema, { id: vmId, description, updateMask: { paths: ["description"] } });
    const sent = nowMs();
    const x = await exchange(writer, grpcHeaders(UPDATE_VM), envelope(toBinary(UpdateVMRequestSchema, req)));
    const ack = nowMs();
    const keep = k >= warmup;
    if (keep) ackMs.push(ack - sent);
    if (grpcStatus(x) !== "0") throw new Error(`UpdateVM failed: grpc-status ${grpcStatus(x)} ${String(x.trailers["grpc-message"] ?? "")}`);
    await until(() => delivered[k] === n);
    for (let i = 0; i < n && keep; i++) {
      const a = arrival[i * total + k]!;
      if (Number.isNaN(a)) continue;
      latencies.push(a - ack);
      fromSend.push(a - sent);
    }
    await sleep(20);
  }
  await sleep(300);
  done = true;
  for (const session of sessions) session.close();
  writer.destroy();
  const inOrder = decoded.length === expected.length && decoded.every((p, k) => {
    const u = fromBinary(VmUpdateSchema, p);
    return u.type === EventType.MODIFIED && u.vm?.id === vmId && u.vm.description === expected[k];
  });
  return {
    streams: n,
    connections,
    synced: syncedCount,
    openMs,
    clientCpuOpenMs,
    rssPerStreamBytes,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: percentile(latencies, 100),
    p50FromSendMs: percentile(fromSend, 50),
    p99FromSendMs: percentile(fromSend, 99),
    ackMs,
    samples: latencies.length,
    missing: n * writes - latencies.length + delivered.slice(0, warmup).reduce((sum, d) => sum + n - d, 0),
    extra,
    errors: sessionErrors(),
    inOrder,
  };
}
