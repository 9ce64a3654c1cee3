import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { QmpClient, QmpError, type QmpEvent } from "./qmp-client.js";

/** A tiny fake QMP server: greets, answers by a handler, and lets the test push events. */
async function fakeQmp(dir: string, answer: (cmd: { execute: string; id: string; arguments?: unknown }) => object | undefined) {
  const socketPath = path.join(dir, "qmp.sock");
  const conns = new Set<net.Socket>();
  const seen: string[] = [];
  const server = net.createServer((sock) => {
    conns.add(sock);
    sock.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + "\r\n");
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
        buf = buf.slice(nl + 1);
        seen.push(cmd.execute);
        const reply = cmd.execute === "qmp_capabilities" ? { return: {} } : answer(cmd);
        if (reply) sock.write(JSON.stringify({ ...reply, id: cmd.id }) + "\r\n");
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    socketPath,
    seen,
    push: (e: object) => { for (const c of conns) c.write(JSON.stringify(e) + "\r\n"); },
    dropAll: () => { for (const c of conns) c.destroy(); },
    close: () => new Promise<void>((r) => { for (const c of conns) c.destroy(); server.close(() => r()); }),
  };
}

test("QMP client: handshake, commands by id, errors, events, timeout, close", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "qmp-test-"));
  const fake = await fakeQmp(dir, (cmd) => {
    if (cmd.execute === "query-status") return { return: { status: "running", running: true } };
    if (cmd.execute === "bad") return { error: { class: "CommandNotFound", desc: "The command bad has not been found" } };
    return undefined; // "slow": never answered
  });
  try {
    const qmp = await QmpClient.connect(fake.socketPath, { timeoutMs: 2000 });
    assert.deepEqual(fake.seen, ["qmp_capabilities"]);
    const [a, b] = await Promise.all([qmp.execute<{ status: string }>("query-status"), qmp.execute<{ status: string }>("query-status")]);
    assert.equal(a.status, "running");
    assert.equal(b.status, "running");
    await assert.rejects(qmp.execute("bad"), (e: unknown) => e instanceof QmpError && e.errorClass === "CommandNotFound" && /bad/.test(e.message));
    await assert.rejects(qmp.execute("slow", undefined, 50), (e: unknown) => e instanceof QmpError && e.errorClass === "Timeout");

    const events: QmpEvent[] = [];
    qmp.onEvent((e) => events.push(e));
    fake.push({ event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" }, timestamp: { seconds: 1, microseconds: 0 } });
    fake.push({ event: "STOP", timestamp: { seconds: 1, microseconds: 0 } });
    const pending = qmp.execute("slow", undefined, 5000);
    await new Promise((r) => setTimeout(r, 0));
    fake.dropAll();
    await assert.rejects(pending, (e: unknown) => e instanceof QmpError && e.errorClass === "Closed");
    await qmp.closed;
    assert.deepEqual(events.map((e) => e.event), ["SHUTDOWN", "STOP"]);
    assert.equal(events[0]?.data?.["guest"], true);
    assert.equal(qmp.isClosed, true);
  } finally {
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("QMP client: connect retries until the socket appears, then gives up at the deadline", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "qmp-test-"));
  try {
    await assert.rejects(QmpClient.connect(path.join(dir, "absent.sock"), { timeoutMs: 100 }), QmpError);
    const connecting = QmpClient.connect(path.join(dir, "qmp.sock"), { timeoutMs: 3000 });
    const fake = await fakeQmp(dir, () => ({ return: {} }));
    const qmp = await connecting;
    assert.deepEqual(await qmp.execute("cont"), {});
    qmp.close();
    await fake.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
