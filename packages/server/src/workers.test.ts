import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { healthOf, healthPid, spawnControlPlane, startPostgres, until, within, type ControlPlaneProcess, type TestPostgres } from "@quantix/testing";

// QUANTIX_WORKERS=2 on PostgreSQL: two processes serve the one port, connections are
// spread over them, a watch on one sees a write made through the other, a worker that
// dies is replaced, and SIGTERM stops them all.

const VMS = "/Quantixkvm.compute.v1.VMService";

/** A unary answer over an existing HTTP/2 connection. */
function h2Request(session: http2.ClientHttp2Session, path: string, method: string, body?: string, contentType = "application/json"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":path": path, ":method": method, ...(body === undefined ? {} : { "content-type": contentType }) });
    let status = 0;
    let out = "";
    req.on("response", (h) => (status = Number(h[":status"])));
    req.setEncoding("utf8").on("data", (d: string) => (out += d));
    req.on("end", () => resolve({ status, body: out }));
    req.on("error", reject);
    req.end(body);
  });
}

/** The parent pid of a process, from /proc. */
function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("QUANTIX_WORKERS=2 on PostgreSQL", () => {
  let pg: TestPostgres;
  let cp: ControlPlaneProcess;
  let url: string;
  const sessions: http2.ClientHttp2Session[] = [];

  before(async () => {
    pg = await startPostgres();
    const db = await pg.createDatabase("workers");
    cp = spawnControlPlane({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: db, QUANTIX_WORKERS: "2", QUANTIX_DEMO: "1" });
    url = await within(cp.url, 120_000, "the first worker listening");
  });
  after(async () => {
    for (const s of sessions) s.destroy();
    await cp?.kill();
    await pg?.stop();
  });

  /** The worker pids seen answering new connections, once two different ones have. */
  const twoWorkers = () =>
    until(async () => {
      const pids = new Set<number>();
      for (let i = 0; i < 6; i++) pids.add(await healthPid(url));
      return pids.size === 2 ? [...pids] : undefined;
    }, "two workers answering new connections", 120_000, 200);

  it("spreads connections over two worker processes of the one primary", async () => {
    const pids = await twoWorkers();
    for (const pid of pids) assert.equal(parentOf(pid), cp.child.pid, `worker ${pid} is the primary's child`);
    assert.match(cp.stderr(), /2 workers share the port/);
  });

  it("a watch on one worker sees a VM created through the other", async () => {
    // Two HTTP/2 connections that landed on different workers.
    const byPid = new Map<number, http2.ClientHttp2Session>();
    await until(async () => {
      const s = http2.connect(url);
      sessions.push(s);
      const pid = (JSON.parse((await h2Request(s, "/_/health", "GET")).body) as { pid: number }).pid;
      if (!byPid.has(pid)) byPid.set(pid, s);
      return byPid.size === 2 ? true : undefined;
    }, "connections on both workers", 60_000, 50);
    const [watchSide, writeSide] = [...byPid.values()] as [http2.ClientHttp2Session, http2.ClientHttp2Session];
    // WatchVMs over Connect (JSON envelopes) on the first worker.
    const watch = watchSide.request({ ":path": `${VMS}/WatchVMs`, ":method": "POST", "content-type": "application/connect+json" });
    const req = Buffer.from(JSON.stringify({}));
    const head = Buffer.alloc(5);
    head.writeUInt32BE(req.length, 1);
    watch.end(Buffer.concat([head, req]));
    let seen = "";
    watch.on("data", (d: Buffer) => (seen += d.toString("latin1")));
    await until(() => (seen.includes("SYNCED") ? true : undefined), "the watch to be synced", 30_000);
    const created = await h2Request(writeSide, `${VMS}/CreateVM`, "POST", JSON.stringify({ name: "made-on-the-other-worker", spec: { cpu: { cores: 1 }, memory: { sizeMib: "256" } } }));
    assert.equal(created.status, 200, created.body);
    await until(() => (seen.includes("made-on-the-other-worker") ? true : undefined), "the other worker's VM in this worker's watch", 30_000);
    watch.close();
  });

  it("replaces a worker that dies, and stops every worker on SIGTERM", async () => {
    try {
      await replaceAndStop();
    } catch (err) {
      throw new Error(`${String(err)}\n--- the control plane's stderr:\n${cp.stderr().slice(-6000)}`);
    }
  });

  async function replaceAndStop(): Promise<void> {
    const [victim, survivor] = (await twoWorkers()) as [number, number];
    process.kill(victim, "SIGKILL");
    const now = await until(async () => {
      const pids = new Set<number>();
      for (let i = 0; i < 6; i++) pids.add(await healthPid(url).catch(() => 0));
      pids.delete(0);
      return pids.size === 2 && !pids.has(victim) ? [...pids] : undefined;
    }, "a new worker in the dead one's place", 120_000, 200);
    assert.ok(now.includes(survivor));
    assert.match(cp.stderr(), new RegExp(`pid ${victim}\\) exited \\(signal SIGKILL\\); starting another`));
    // Every worker's /_/health says what happened, not only the primary's stderr.
    for (const pid of now) {
      const said = await until(async () => {
        const h = (await healthOf(url)) as { pid: number; workers?: { wanted: number; running: number; restarts_total: number; last_exit?: { pid: number; how: string } } };
        return h.pid === pid && h.workers?.running === 2 ? h.workers : undefined;
      }, `worker ${pid}'s health naming the replaced worker`, 30_000, 100);
      assert.equal(said.wanted, 2);
      assert.equal(said.restarts_total, 1);
      assert.deepEqual({ pid: said.last_exit?.pid, how: said.last_exit?.how }, { pid: victim, how: "signal SIGKILL" });
    }
    for (const s of sessions) s.destroy();
    cp.child.kill("SIGTERM");
    const exit = await within(cp.exited, 30_000, "the primary's exit after SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, cp.stderr());
    await until(() => (now.every((pid) => !alive(pid)) ? true : undefined), "every worker gone", 10_000);
  }
});

describe("QUANTIX_WORKERS without PostgreSQL", () => {
  it("is refused with what to do, exit 2", async () => {
    const cp = spawnControlPlane({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory", QUANTIX_WORKERS: "2" });
    const exit = await within(cp.exited, 60_000, "exit");
    assert.deepEqual(exit, { code: 2, signal: null });
    assert.match(cp.stderr(), /QUANTIX_WORKERS="2" \(2 processes\) needs QUANTIX_STORE=postgres:\/\/\.\.\.: the memory store lives inside one process/);
  });
});
