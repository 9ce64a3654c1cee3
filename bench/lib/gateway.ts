import * as http2 from "node:http2";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { ChangeEventSchema, ChangeType } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { GatewayClient } from "@quantix/server";
import { EnvelopeReader, envelope } from "./grpc-frame.js";
import { connect, grpcHeaders } from "./h2-client.js";
import { RawH2 } from "./raw-h2.js";
import { isSynced, largeDiff, setDiff, SMALL, subscribe, subscribeBody, SUBSCRIBE, writeBody, writeOnce } from "./gateway-wire.js";
import { median, nowMs, percentile, sleep } from "./stats.js";

/** What the bare server needs from ours: the bytes it answers with, and ours' HTTP/2 SETTINGS. */
export interface GatewayCapture {
  readonly settings: http2.Settings;
  readonly diffEventBytes: number;
}

/** Opens a subscription on ours, makes one small write, and keeps the response and events' bytes for the bare server. */
export async function captureGateway(url: string, dir: string): Promise<GatewayCapture> {
  const s = await connect(url);
  try {
    const events: Buffer[] = [];
    const sub = subscribe(s, subscribeBody({ nodes: ["bench-capture"] }), (_ev, _t, _len, raw) => raw && events.push(envelope(raw)));
    await sub.synced;
    const response = await writeOnce(s, writeBody("bench-capture", "bench-capture", 1, setDiff("n", 1)));
    const deadline = nowMs() + 5000;
    while (events.length < 2 && nowMs() < deadline) await sleep(2);
    sub.close();
    if (events.length < 2) throw new Error("capture: the subscription did not deliver the write");
    writeFileSync(join(dir, "gateway-write-response.grpc"), response);
    writeFileSync(join(dir, "gateway-synced-event.grpc"), events[0]!);
    writeFileSync(join(dir, "gateway-diff-event.grpc"), events[1]!);
    const { initialWindowSize, maxFrameSize, maxConcurrentStreams, maxHeaderListSize } = s.remoteSettings;
    const settings = Object.fromEntries(Object.entries({ initialWindowSize, maxFrameSize, maxConcurrentStreams, maxHeaderListSize }).filter(([, v]) => v !== undefined)) as http2.Settings;
    return { settings, diffEventBytes: events[1]!.length };
  } finally {
    s.close();
  }
}

/** A server under test: its URL, and a writer id / node prefix of its own so that ours gets distinct, increasing clocks. */
interface Side {
  readonly url: string;
  readonly tag: string;
  /** Per writer, the last count used. */
  readonly clocks: Map<string, number>;
}
const next = (side: Side, writer: string) => {
  const k = (side.clocks.get(writer) ?? 0) + 1;
  side.clocks.set(writer, k);
  return k;
};

/** The gateway bench's results: [ours, bare] for each measure. */
export interface GatewayResult {
  readonly smallWriteP50Ms: [number, number];
  /** The same small writes through GatewayClient (connect-node's gRPC transport) instead of the raw client. */
  readonly clientSmallWriteP50Ms: [number, number];
  readonly largeWriteP50Ms: [number, number];
  readonly largeWriteMiB: number;
  readonly subscribeSetupP50Ms: [number, number];
  readonly streamMessageP50Ms: [number, number];
  readonly streamMessageAckP50Ms: [number, number];
  readonly unaryPerSec: [number, number];
  readonly unaryConcurrency: number;
  readonly streamedPerSec: [number, number];
  readonly streamedMessages: number;
  /** Ours' catch-up on every change of the rate test from version 1, resuming after RESOURCE_EXHAUSTED. */
  readonly fullCatchUp: { readonly messages: number; readonly ms: number; readonly resumes: number; readonly stalled: string };
  readonly fanoutStreams: number;
  /** One write reaching every stream: from sending it to the last delivery (median of the writes). */
  readonly fanoutAllMs: [number, number];
  readonly fanoutOpenMs: [number, number];
  readonly fanoutNotes: [string, string];
}

/** Runs every measure against ours and the bare server, taking turns. */
export async function gatewayBench(oursUrl: string, bareUrl: string, progress: (m: string) => void): Promise<GatewayResult> {
  const sides: [Side, Side] = [
    { url: oursUrl, tag: "ours", clocks: new Map() },
    { url: bareUrl, tag: "bare", clocks: new Map() },
  ];
  const sessions = await Promise.all(sides.map((s) => connect(s.url)));
  try {
    progress("gateway: small WriteDiff at concurrency 1 (1,000 each after 100 warm-up, 4 rounds in turns)");
    const small = sides.map((): number[] => []);
    const smallWrites = async (i: number, n: number, keep: boolean) => {
      const side = sides[i]!;
      const bodies = Array.from({ length: n }, () => writeBody("bench-small", "bench-small", next(side, "bench-small"), setDiff("n", 1)));
      for (const b of bodies) {
        const t0 = nowMs();
        await writeOnce(sessions[i]!, b);
        if (keep) small[i]!.push(nowMs() - t0);
      }
    };
    for (const i of [0, 1]) await smallWrites(i, 100, false);
    for (let r = 0; r < 4; r++) for (const i of [0, 1]) await smallWrites(i, 250, true);

    progress("gateway: small WriteDiff at concurrency 1 through GatewayClient (connect-node gRPC, one connection): 500 each after 50 warm-up, in turns");
    const viaClient = await clientLatency(sides, 500, 50);

    const mib = 10;
    progress(`gateway: ${mib} MiB WriteDiff at concurrency 1 (6 each after 1 warm-up, in turns)`);
    const diff = largeDiff(mib);
    const large = sides.map((): number[] => []);
    for (let r = 0; r < 7; r++)
      for (const i of [0, 1]) {
        const body = writeBody("bench-large", "bench-large", next(sides[i]!, "bench-large"), diff);
        const t0 = nowMs();
        await writeOnce(sessions[i]!, body);
        if (r > 0) large[i]!.push(nowMs() - t0);
      }

    progress("gateway: SubscribeChanges setup, request to SYNCED (300 each after 30 warm-up, in turns)");
    const setup = sides.map((): number[] => []);
    const subscribeOnce = async (i: number, keep: boolean) => {
      const t0 = nowMs();
      const sub = subscribe(sessions[i]!, subscribeBody({ nodes: ["bench-small"] }), () => undefined);
      const t = await sub.synced;
      sub.close();
      if (keep) setup[i]!.push(t - t0);
    };
    for (const i of [0, 1]) for (let k = 0; k < 30; k++) await subscribeOnce(i, false);
    for (let r = 0; r < 3; r++) for (const i of [0, 1]) for (let k = 0; k < 100; k++) await subscribeOnce(i, true);

    progress("gateway: stream message latency, one subscriber, WriteDiff on another connection to delivery (500 each after 50 warm-up, in turns)");
    const latency = await streamLatency(sides, 500, 50);

    const concurrency = 64;
    progress(`gateway: unary WriteDiff calls per second, ${concurrency} in flight over 4 connections, 64 writers on 64 nodes (3 rounds of 2 s in turns)`);
    const rates = sides.map((): number[] => []);
    for (let r = 0; r < 3; r++) for (const i of [0, 1]) rates[i]!.push(await unaryRate(sides[i]!, concurrency, 2000));

    progress("gateway: streamed messages per second: SubscribeChanges catching up on the last 900 changes, to SYNCED (9 each, in turns); then a catch-up on every change from version 1");
    const streamed = await streamedRate(sides, 9, 900);

    const n = 10_000;
    progress(`gateway: ${n.toLocaleString("en-US")} SubscribeChanges streams on one connection, then one write reaching all (3 writes)`);
    const fan: [FanoutRun, FanoutRun] = [await fanout(sides[0].url, n, 3), await fanout(sides[1].url, n, 3)];

    return {
      smallWriteP50Ms: [median(small[0]!), median(small[1]!)],
      clientSmallWriteP50Ms: viaClient,
      largeWriteP50Ms: [median(large[0]!), median(large[1]!)],
      largeWriteMiB: mib,
      subscribeSetupP50Ms: [median(setup[0]!), median(setup[1]!)],
      streamMessageP50Ms: latency.fromSend,
      streamMessageAckP50Ms: latency.fromAck,
      unaryPerSec: [median(rates[0]!), median(rates[1]!)],
      unaryConcurrency: concurrency,
      streamedPerSec: [streamed.perSec[0], streamed.perSec[1]],
      streamedMessages: 900,
      fullCatchUp: streamed.full,
      fanoutStreams: n,
      fanoutAllMs: [fan[0].allMs, fan[1].allMs],
      fanoutOpenMs: [fan[0].openMs, fan[1].openMs],
      fanoutNotes: [fan[0].note, fan[1].note],
    };
  } finally {
    for (const s of sessions) s.close();
  }
}

/** Sequential small writes through GatewayClient, one connection each, taking turns. */
async function clientLatency(sides: readonly Side[], n: number, warmup: number): Promise<[number, number]> {
  const clients = sides.map((s) => new GatewayClient({ baseUrl: s.url, connections: 1 }));
  const samples = sides.map((): number[] => []);
  const diff = setDiff("n", 1);
  try {
    for (let r = 0; r < 5; r++)
      for (const [i, side] of sides.entries())
        for (let k = 0; k < (n + warmup) / 5; k++) {
          const req = { nodeId: new TextEncoder().encode("bench-client"), diffBson: diff, vectorClock: { entries: { "bench-client": BigInt(next(side, "bench-client")) } }, writerId: "bench-client" };
          const t0 = nowMs();
          await clients[i]!.writeDiff(req);
          if (r > 0 || k >= warmup) samples[i]!.push(nowMs() - t0);
        }
  } finally {
    for (const c of clients) c.close();
  }
  return [median(samples[0]!), median(samples[1]!)];
}

/** Write sent (and acknowledged) to its event's arrival at a subscriber on another connection. */
async function streamLatency(sides: readonly Side[], n: number, warmup: number): Promise<{ fromSend: [number, number]; fromAck: [number, number] }> {
  const fromSend = sides.map((): number[] => []);
  const fromAck = sides.map((): number[] => []);
  const subs = await Promise.all(sides.map((s) => connect(s.url)));
  const writers = await Promise.all(sides.map((s) => connect(s.url)));
  try {
    const arrivals = sides.map((): number[] => []);
    const open = sides.map((s, i) => subscribe(subs[i]!, subscribeBody({ nodes: [`bench-latency`] }), (ev, t) => ev?.type === ChangeType.DIFF && arrivals[i]!.push(t)));
    await Promise.all(open.map((o) => o.synced));
    for (let r = 0; r < 5; r++)
      for (const [i, side] of sides.entries()) {
        for (let k = 0; k < (n + warmup) / 5; k++) {
          const keep = r > 0 || k >= warmup;
          const body = writeBody("bench-latency", "bench-latency", next(side, "bench-latency"), setDiff("n", k));
          const before = arrivals[i]!.length;
          const sent = nowMs();
          await writeOnce(writers[i]!, body);
          const ack = nowMs();
          while (arrivals[i]!.length === before) await new Promise((r) => setImmediate(r));
          const t = arrivals[i]![before]!;
          if (keep) {
            fromSend[i]!.push(t - sent);
            fromAck[i]!.push(t - ack);
          }
        }
      }
    for (const o of open) o.close();
  } finally {
    for (const s of [...subs, ...writers]) s.close();
  }
  return { fromSend: [median(fromSend[0]!), median(fromSend[1]!)], fromAck: [median(fromAck[0]!), median(fromAck[1]!)] };
}

/** Unary WriteDiff calls completed per second with `concurrency` in flight over 4 connections, bodies encoded before the clock starts. */
async function unaryRate(side: Side, concurrency: number, ms: number): Promise<number> {
  const perWorker = 1500;
  const bodies = Array.from({ length: concurrency }, (_, w) => Array.from({ length: perWorker }, () => writeBody(`bench-rps-${w}`, `bench-rps-${w}`, next(side, `bench-rps-${w}`), setDiff("n", w))));
  const conns = await Promise.all([0, 1, 2, 3].map(() => connect(side.url)));
  let done = 0;
  let unused = 0;
  try {
    const t0 = nowMs();
    const end = t0 + ms;
    await Promise.all(
      bodies.map(async (list, w) => {
        let k = 0;
        for (; k < list.length && nowMs() < end; k++) {
          await writeOnce(conns[w % conns.length]!, list[k]!);
          done++;
        }
        unused += list.length - k;
      }),
    );
    const took = nowMs() - t0;
    if (unused === 0) throw new Error(`unary rate: ${concurrency} x ${perWorker} bodies ran out before ${ms} ms`);
    return (done / took) * 1000;
  } finally {
    for (const c of conns) c.close();
  }
}

/** How one SubscribeChanges call ended: at SYNCED, or with a gRPC status (8: RESOURCE_EXHAUSTED). */
interface CatchUp {
  readonly ended: "synced" | "status";
  readonly status: string;
  readonly messages: number;
  readonly last: bigint;
  readonly syncedVersion: bigint;
  readonly ms: number;
}

/** Reads one SubscribeChanges call for the rate test's nodes after `from`, every event decoded, until SYNCED or its status. */
function catchUp(s: http2.ClientHttp2Session, from: bigint, headers: http2.OutgoingHttpHeaders = {}): Promise<CatchUp> {
  return new Promise((resolve, reject) => {
    let messages = 0;
    let last = from;
    const t0 = nowMs();
    const req = s.request({ ...grpcHeaders(SUBSCRIBE), ...headers });
    const reader = new EnvelopeReader((_len, payload) => {
      const ev = fromBinary(ChangeEventSchema, payload!);
      if (ev.type === ChangeType.SYNCED) {
        req.close(http2.constants.NGHTTP2_CANCEL);
        return resolve({ ended: "synced", status: "0", messages, last, syncedVersion: ev.version, ms: nowMs() - t0 });
      }
      messages++;
      if (ev.version > last) last = ev.version;
    }, () => true);
    req.on("data", (c: Buffer) => reader.push(c));
    req.on("error", reject);
    const status = (h: http2.IncomingHttpHeaders) => {
      const code = h["grpc-status"];
      if (code !== undefined) resolve({ ended: "status", status: `${String(code)} ${decodeURIComponent(String(h["grpc-message"] ?? ""))}`, messages, last, syncedVersion: 0n, ms: nowMs() - t0 });
    };
    req.on("response", status);
    req.on("trailers", status);
    req.end(subscribeBody({ prefix: "bench-rps-", fromVersion: from }));
  });
}

/**
 * Streamed messages per second: ours catches up on the last `count` changes of the rate
 * test's nodes (from_version = latest - count, to SYNCED), the bare server writes as many
 * same-size events in a loop; every event decoded on both sides. `count` stays under ours'
 * subscriber backlog (1000 changes). Beside it, one catch-up on every change of the rate
 * test from version 1, resuming from the last version received after RESOURCE_EXHAUSTED
 * as the contract says, and given up when a resume delivers nothing.
 */
async function streamedRate(sides: readonly Side[], runs: number, count: number): Promise<{ perSec: [number, number]; full: { messages: number; ms: number; resumes: number; stalled: string } }> {
  const s = await Promise.all(sides.map((x) => connect(x.url)));
  for (const x of s) x.setLocalWindowSize(64 * 1024 * 1024);
  try {
    const latest = (await catchUp(s[0]!, 0n)).syncedVersion;
    const results = sides.map((): number[] => []);
    for (let r = 0; r < runs; r++)
      for (const i of [0, 1]) {
        const x = await catchUp(s[i]!, latest - BigInt(count), i === 1 ? { "x-count": String(count) } : {});
        if (x.ended !== "synced" || x.messages !== count) throw new Error(`streamed rate: ${sides[i]!.tag} delivered ${x.messages} of ${count} changes, then ${x.ended === "synced" ? "SYNCED" : `grpc-status ${x.status}`}`);
        results[i]!.push((x.messages / x.ms) * 1000);
      }
    let from = 1n;
    let messages = 0;
    let resumes = 0;
    let stalled = "";
    const t0 = nowMs();
    for (;;) {
      const x = await catchUp(s[0]!, from);
      messages += x.messages;
      from = x.last;
      if (x.ended === "synced") break;
      if (x.messages === 0) {
        stalled = `ended grpc-status ${x.status} before sending any change (from_version ${from}); a resume makes no progress`;
        break;
      }
      resumes++;
    }
    return { perSec: [median(results[0]!), median(results[1]!)], full: { messages, ms: nowMs() - t0, resumes, stalled } };
  } finally {
    for (const x of s) x.close();
  }
}

interface FanoutRun {
  readonly openMs: number;
  readonly allMs: number;
  readonly note: string;
}

/** `n` SubscribeChanges on one raw HTTP/2 connection (raw-h2.ts: cheap per frame), all SYNCED, then `writes` writes on another, each timed until every stream has it. */
async function fanout(url: string, n: number, writes: number): Promise<FanoutRun> {
  const synced = new Uint8Array(n);
  const count = new Int32Array(n);
  let syncedCount = 0;
  const reached = new Int32Array(writes + 1);
  const lastArrival = new Float64Array(writes + 1);
  const readers = Array.from({ length: n }, (_, i) => {
    let t = 0;
    const reader = new EnvelopeReader(
      (_len, payload) => {
        if (!synced[i]) {
          if (isSynced(payload)) (synced[i] = 1), syncedCount++;
          return;
        }
        const k = ++count[i]!;
        if (k <= writes) (reached[k]! += 1), (lastArrival[k] = t);
      },
      (len) => !synced[i] && len < SMALL,
    );
    return { push: (d: Buffer, at: number) => ((t = at), reader.push(d)) };
  });
  const raw = await RawH2.connect(url, (i, data, t) => readers[i]?.push(data, t));
  const writer = await connect(url);
  const u = new URL(url);
  // As fanout.ts: let the SETTINGS exchange (the server's windows) complete before 10,000 requests arrive at once.
  await sleep(200);
  try {
    const t0 = nowMs();
    raw.open(n, { ":method": "POST", ":scheme": "http", ":path": SUBSCRIBE, ":authority": u.host, "content-type": "application/grpc", te: "trailers" }, subscribeBody({ nodes: ["bench-fanout"] }));
    const deadline = t0 + 60_000;
    while (syncedCount < n && raw.errors === 0 && nowMs() < deadline) await sleep(2);
    const openMs = nowMs() - t0;
    if (syncedCount < n) return { openMs: NaN, allMs: NaN, note: `${syncedCount}/${n} streams SYNCED, ${raw.errors} ended early (${[...raw.endings].map(([k, v]) => `${k}: ${v}`).join(", ")})` };
    const all: number[] = [];
    for (let k = 1; k <= writes; k++) {
      const sent = nowMs();
      await writeOnce(writer, writeBody("bench-fanout", `bench-fanout-${u.port}`, k, setDiff("n", k)));
      const until = nowMs() + 30_000;
      while (reached[k]! < n && nowMs() < until) await sleep(1);
      if (reached[k]! < n) return { openMs, allMs: NaN, note: `write ${k} reached ${reached[k]}/${n} streams` };
      all.push(lastArrival[k]! - sent);
    }
    return { openMs, allMs: percentile(all, 50), note: raw.errors ? `${raw.errors} streams ended early` : "" };
  } finally {
    raw.close();
    writer.close();
  }
}

