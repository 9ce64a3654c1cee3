import { readdirSync, readFileSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import { UpdateVMRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { EnvelopeReader, envelope } from "./lib/grpc-frame.js";
import { connect, exchange, grpcHeaders, grpcStatus } from "./lib/h2-client.js";
import { startServer } from "./lib/proc.js";
import { RawH2 } from "./lib/raw-h2.js";
import { nowMs, percentile, sleep } from "./lib/stats.js";
import { WATCH_VMS, demoVm, isSynced } from "./lib/fanout.js";
import { DEMO_VM_ID } from "./lib/unary.js";

// Server CPU per watcher of one fan-out, which other work on the machine barely moves (unlike
// latency): `taskset -c 1 node --import tsx bench/fanout-cpu.ts [ours|bare] [watchers] [connections] [writes]`.
// CPU is the server's on-CPU time (ns, /proc/<pid>/task/*/schedstat summed over its threads)
// from just before each UpdateVM until every watcher received it, median over the writes,
// minus the same with one watcher (the write itself), divided by the other watchers. It also
// prints, from sending each UpdateVM, the median time to its answer and to the first and the
// last delivery (which of the answer and the fan-out went first). The
// server runs on CPU 0. FANOUT_SERVER_SCRIPT runs another tree's control plane (before and
// after a change); FANOUT_PROF_DIR writes a --cpu-prof of ours there; FANOUT_SERVER_ENV
// (JSON) adds to the server's environment.

const which = process.argv[2] ?? "ours";
const n = Number(process.argv[3] ?? 10_000);
const conns = Number(process.argv[4] ?? 1);
const writes = Number(process.argv[5] ?? 20);
const extraEnv = process.env["FANOUT_SERVER_ENV"] ? (JSON.parse(process.env["FANOUT_SERVER_ENV"]) as Record<string, string>) : {};

const onCpuNs = (pid: number): number => {
  let sum = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // a thread that ended
    }
  }
  return sum;
};

const oursEnv = { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "1", QUANTIX_LOG_LEVEL: "info", QUANTIX_SHUTDOWN_GRACE_MS: "2000" };

/** Bare sends our demo VM in its updates (the same bytes per watcher): read from a server of ours started for it. */
async function bareVm(): Promise<string> {
  const s = await startServer("fanout-cpu-vm", process.env["FANOUT_SERVER_SCRIPT"] ?? "packages/server/src/main.ts", [], { ...oursEnv, ...extraEnv });
  try {
    return await demoVm(s.url, DEMO_VM_ID);
  } finally {
    await s.stop();
  }
}
const bareArgs = which === "bare" ? [await bareVm()] : [];

async function run(watchers: number): Promise<{ perWriteUs: number[]; clientUs: number[]; p99: number; p50: number; ack: number; first: number; updateBytes: number }> {
  const server =
    which === "bare"
      ? await startServer("fanout-cpu-bare", "bench/servers/bare-fanout.ts", bareArgs, extraEnv)
      : process.env["FANOUT_PROF_DIR"] && watchers > 1
        ? await startServer("fanout-cpu-ours", `--cpu-prof-dir=${process.env["FANOUT_PROF_DIR"]}`, ["--cpu-prof", (process.env["FANOUT_SERVER_SCRIPT"] ?? "packages/server/src/main.ts")], {
            QUANTIX_ADDR: "127.0.0.1:0",
            QUANTIX_STORE: "memory",
            QUANTIX_DEMO: "1",
            QUANTIX_LOG_LEVEL: "info",
            QUANTIX_SHUTDOWN_GRACE_MS: "2000",
          })
        : await startServer("fanout-cpu-ours", (process.env["FANOUT_SERVER_SCRIPT"] ?? "packages/server/src/main.ts"), [], { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_DEMO: "1", QUANTIX_LOG_LEVEL: "info", QUANTIX_SHUTDOWN_GRACE_MS: "2000", ...extraEnv });
  try {
    const synced = new Uint8Array(watchers);
    const count = new Int32Array(watchers);
    const times = new Float64Array(watchers);
    let syncedCount = 0;
    let delivered = 0;
    let lastArrival = 0;
    /** The size of an update's message (bare's and ours differ: it is not the same VM). */
    let updateBytes = 0;
    const arrivals: number[] = [];
    const readers = Array.from({ length: watchers }, (_, i) =>
      new EnvelopeReader(
        (len, payload) => {
          if (!synced[i]) {
            if (isSynced(payload)) (synced[i] = 1), syncedCount++;
            return;
          }
          count[i]++;
          delivered++;
          updateBytes = len;
          lastArrival = times[i]!;
          arrivals.push(times[i]!);
        },
        (len) => !synced[i] && len < 32,
      ),
    );
    const per = Math.ceil(watchers / conns);
    const sessions = await Promise.all(
      Array.from({ length: conns }, (_, c) =>
        RawH2.connect(server.url, (j, data, t) => {
          const i = c * per + j;
          times[i] = t;
          readers[i]?.push(data);
        }),
      ),
    );
    await sleep(200);
    const u = new URL(server.url);
    sessions.forEach((s, c) => s.open(Math.max(0, Math.min(per, watchers - c * per)), { ":method": "POST", ":scheme": "http", ":path": WATCH_VMS, ":authority": u.host, "content-type": "application/grpc", te: "trailers" }, envelope(new Uint8Array(0))));
    const deadline = nowMs() + 60_000;
    while (syncedCount < watchers && nowMs() < deadline) await sleep(5);
    if (syncedCount < watchers) throw new Error(`only ${syncedCount} of ${watchers} synced`);
    const writer = await connect(server.url);
    await sleep(500);
    const perWriteUs: number[] = [];
    const clientUs: number[] = [];
    const lat: number[] = [];
    /** Sent -> the UpdateVM's answer, and sent -> the first watcher's delivery: which went first. */
    const acks: number[] = [];
    const firsts: number[] = [];
    for (let k = 0; k < writes + 2; k++) {
      const req = create(UpdateVMRequestSchema, { id: DEMO_VM_ID, description: `cpu ${k} ${Date.now()}`, updateMask: { paths: ["description"] } });
      const body = envelope(toBinary(UpdateVMRequestSchema, req));
      const want = delivered + watchers;
      arrivals.length = 0;
      const c0 = onCpuNs(server.pid);
      const u0 = process.cpuUsage();
      const sent = nowMs();
      const x = await exchange(writer, grpcHeaders("/Quantixkvm.compute.v1.VMService/UpdateVM"), body);
      const acked = nowMs();
      if (grpcStatus(x) !== "0") throw new Error(`UpdateVM: ${grpcStatus(x)}`);
      while (delivered < want && nowMs() < deadline + 60_000) await sleep(1);
      // Let the server finish what follows the last write (its log line, the stream bookkeeping).
      await sleep(30);
      const c1 = onCpuNs(server.pid);
      const u = process.cpuUsage(u0);
      if (k >= 2) {
        perWriteUs.push((c1 - c0) / 1000);
        clientUs.push(u.user + u.system);
        lat.push(lastArrival - sent);
        acks.push(acked - sent);
        firsts.push(Math.min(...arrivals) - sent);
      }
      void lat;
      await sleep(20);
    }
    for (const s of sessions) s.close();
    writer.destroy();
    return { perWriteUs, clientUs, p99: percentile(lat, 99), p50: percentile(lat, 50), ack: percentile(acks, 50), first: percentile(firsts, 50), updateBytes };
  } finally {
    await server.stop();
  }
}

const big = await run(n);
const one = await run(1);
const med = (xs: number[]) => percentile(xs, 50);
const perWatcher = (med(big.perWriteUs) - med(one.perWriteUs)) / (n - 1);
process.stdout.write(
  `${which} ${n} watchers over ${conns} conn, updates of ${big.updateBytes} bytes: server CPU per write median ${med(big.perWriteUs).toFixed(0)} µs (1 watcher: ${med(one.perWriteUs).toFixed(0)} µs) => ${perWatcher.toFixed(2)} µs per watcher; client CPU per write median ${(med(big.clientUs) / 1000).toFixed(1)} ms; sent -> last delivery median ${big.p50.toFixed(1)} ms, max ${big.p99.toFixed(1)} ms, -> answer median ${big.ack.toFixed(1)} ms, -> first delivery median ${big.first.toFixed(1)} ms; load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}\n`,
);
process.exit(0);
