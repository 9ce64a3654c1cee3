import { create } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VmUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";

// `node --import tsx bench/fanout-js.ts [watchers] [tree,tree]` (two checkouts, e.g. a worktree of the
// commit before and this one; default: this checkout against itself). In process: the JS of one fan-out (WatchHub -> watchFiltered -> the identity
// interceptor's cuttable layer -> two observeStream layers (observeCalls, mapErrors) -> pump)
// to N fake streams whose write() only counts, old tree against new tree, alternating.
const N = Number(process.argv[2] ?? 10_000);
const here = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const trees = (process.argv[3] ?? `${here},${here}`).split(",");

async function load(root: string) {
  const hub = await import(`${root}/packages/server/src/store/watch-hub.ts`);
  const wf = await import(`${root}/packages/server/src/services/watch-filter.ts`);
  const os = await import(`${root}/packages/rpc/src/interceptors/observe-stream.ts`);
  const sp = await import(`${root}/packages/rpc/src/fast-path/stream-pump.ts`);
  const gw = await import(`${root}/packages/rpc/src/fast-path/grpc-wire.ts`);
  const core = await import(`${root}/packages/core/src/index.ts`);
  const cut = await import(`${root}/packages/server/src/identity/cuttable-stream.ts`);
  let rev = 1n;
  const h = new hub.WatchHub("vm", () => rev);
  const updates = new wf.SharedUpdates((f: { type: keyof typeof EventType; object: unknown; revision: bigint }) => create(VmUpdateSchema, { type: EventType[f.type], ...(f.object ? { vm: f.object as never } : {}), resourceVersion: f.revision }));
  let writes = 0;
  const sink = { write: () => (writes++, true), writableLength: 0, writableNeedDrain: false, destroyed: false, on() {}, once() {}, off() {} };
  const q = { where: undefined, labels: undefined, range: undefined };
  const key = JSON.stringify(q);
  const encode = (m: object) => gw.envelope(VmUpdateSchema, m, 4 << 20);
  const abort = new AbortController();
  for (let i = 0; i < N; i++) {
    const src = wf.watchFiltered({ watch: (from: bigint, s: AbortSignal) => h.watch(from, s) }, 1n, async () => ({ items: [], revision: 1n }), (o: never) => core.matchesQuery(core.VM_KIND, o, q), updates, abort.signal, key);
    let n = 0;
    const c = cut.cuttable(src, () => () => undefined);
    const a = os.observeStream(c, { opened: () => undefined, delivered: (k: number) => (n += k), ended: () => void n });
    const b = os.observeStream(a, { settle: (e: unknown) => e });
    void sp.pump(sink, b, encode);
  }
  await new Promise((r) => setTimeout(r, 50));
  let vm = core.deepFreeze(create(VirtualMachineSchema, { id: "11111111-1111-1111-1111-111111111111", name: "web-server-01", projectId: "demo", description: "x", resourceVersion: 1n, labels: { app: "web", tier: "front" } }));
  return {
    async once(): Promise<number> {
      const want = writes + N;
      rev++;
      const previous = vm;
      vm = core.deepFreeze(create(VirtualMachineSchema, { ...previous, description: `d${rev}`, resourceVersion: rev }));
      const c0 = process.cpuUsage();
      h.publish({ type: "MODIFIED", object: vm, previous, revision: rev });
      while (writes < want) await new Promise((r) => setImmediate(r));
      const c = process.cpuUsage(c0);
      return (c.user + c.system) / N;
    },
  };
}

const runs = await Promise.all(trees.map(load));
const results: number[][] = trees.map(() => []);
for (let round = 0; round < 8; round++) {
  for (let t = 0; t < trees.length; t++) {
    for (let k = 0; k < 15; k++) {
      const us = await runs[t]!.once();
      if (round > 0) results[t]!.push(us);
    }
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
trees.forEach((t, i) => process.stdout.write(`${t}: ${med(results[i]!).toFixed(3)} µs of JS per watcher (median of ${results[i]!.length} fan-outs to ${N})\n`));
process.exit(0);
