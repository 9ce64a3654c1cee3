import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { VmEventType, VmService, VmState, type VmEvent } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import { collect, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

const MIB = 1024n * 1024n;
const config = { cpu: { vcpuCount: 2 }, memory: { sizeBytes: 256n * MIB }, boot: { kernelPath: "/boot/vmlinuz" }, metadata: { cp: "x" } };

let backend: SimulatedBackend;
let server: AgentServer;
before(async () => {
  backend = new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 20 });
  const manager = new VmManager({ backend });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger });
});
after(async () => {
  await server.close();
  await backend.close();
});

const protocols = {
  grpc: () => createGrpcTransport({ baseUrl: server.url }),
  connect: () => createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }),
};

for (const [name, transport] of Object.entries(protocols)) {
  test(`${name}: lifecycle, errors, console and watch over a real socket`, async () => {
    const c = createClient(VmService, transport());
    const id = `rpc-${name}`;
    const created = await c.createVm({ vmId: id, config });
    assert.equal(created.state, VmState.CREATED);
    const bad = await rejection(c.createVm({ vmId: "bad id", config: { cpu: { vcpuCount: 0 } } }));
    assert.equal(bad.code, Code.InvalidArgument);
    assert.match(bad.message, /vm_id/);
    assert.match(bad.message, /config\.memory/);
    assert.equal((await rejection(c.pauseVm({ vmId: id }))).code, Code.FailedPrecondition);
    assert.equal((await rejection(c.getVmInfo({ vmId: "nope" }))).code, Code.NotFound);

    const ac = new AbortController();
    const watch = c.watchVms({}, { signal: ac.signal })[Symbol.asyncIterator]();
    const events = { [Symbol.asyncIterator]: () => watch };
    const snap = await collect<VmEvent>(events, (xs) => xs.some((x) => x.synced));
    const mine = snap.find((e) => e.vmId === id);
    assert.equal(mine?.type, VmEventType.EXISTING);
    assert.equal(mine?.state, VmState.CREATED);
    assert.equal(snap[snap.length - 1]?.type, VmEventType.SYNCED);

    assert.equal((await c.bootVm({ vmId: id })).state, VmState.RUNNING);
    const change = await collect<VmEvent>(events, (xs) => xs.some((x) => x.vmId === id && x.state === VmState.RUNNING));
    const running = change.find((x) => x.vmId === id && x.state === VmState.RUNNING);
    assert.equal(running?.type, VmEventType.CHANGED);
    assert.ok(running?.startedAt !== undefined);
    assert.deepEqual(running?.metadata, { cp: "x" });

    const info = await c.getVmInfo({ vmId: id });
    assert.equal(info.state, VmState.RUNNING);
    assert.equal(info.backendInfo?.backendType, "simulated");
    assert.ok(info.backendInfo?.capabilities.includes("pause"));
    const list = await c.listVms({ stateFilter: VmState.RUNNING });
    assert.ok(list.vms.some((v) => v.vmId === id && v.vcpuCount === 2));

    const out = await c.getConsoleOutput({ vmId: id });
    assert.match(new TextDecoder().decode(out.data), /simulated console: booted/);
    const stream = c.streamConsole({ vmId: id, tailBytes: 4096 }, { signal: ac.signal });
    const chunks = await collect(stream, (xs) => new TextDecoder().decode(Buffer.concat(xs.map((x) => x.data))).includes("tick"));
    assert.match(new TextDecoder().decode(chunks[0]!.data), /booted/);
    for (let i = 1; i < chunks.length; i++) assert.equal(chunks[i]!.offset, chunks[i - 1]!.offset + BigInt(chunks[i - 1]!.data.length));

    backend.simulateCrash(id, "simulated fault");
    const crash = await collect<VmEvent>(events, (xs) => xs.some((x) => x.state === VmState.CRASHED && x.vmId === id));
    assert.equal(crash.find((x) => x.state === VmState.CRASHED)?.reason, "simulated fault");
    await c.deleteVm({ vmId: id });
    await collect<VmEvent>(events, (xs) => xs.some((x) => x.type === VmEventType.DELETED && x.vmId === id));
    ac.abort();
    assert.equal((await rejection(c.getVmInfo({ vmId: id }))).code, Code.NotFound);
  });
}

test("a console stream ends OK when its VM is deleted", async () => {
  const c = createClient(VmService, protocols.grpc());
  await c.createVm({ vmId: "rpc-del", config });
  await c.bootVm({ vmId: "rpc-del" });
  const got: Uint8Array[] = [];
  const reading = (async () => {
    for await (const chunk of c.streamConsole({ vmId: "rpc-del" })) got.push(chunk.data);
  })();
  await until(() => (got.length > 0 ? true : undefined), "console output");
  await c.deleteVm({ vmId: "rpc-del", force: true });
  await reading;
});

test("GET /_/health reports the backend's ping, type and version", async () => {
  const ok = await fetch(`${server.url}/_/health`);
  assert.equal(ok.status, 200);
  const body = (await ok.json()) as { status: string; backend: { type: string; version: string }; ping: { ok: boolean } };
  assert.equal(body.status, "ok");
  assert.equal(body.backend.type, "simulated");
  assert.match(body.backend.version, /simulator/);
  backend.setUnavailable("hypervisor gone");
  try {
    const bad = await fetch(`${server.url}/_/health`);
    assert.equal(bad.status, 503);
    assert.match(await bad.text(), /hypervisor gone/);
  } finally {
    backend.setUnavailable(undefined);
  }
});

test("serves gRPC reflection: the README's buf curl --list-methods lists vmm.v1.VmService", async () => {
  const buf = fileURLToPath(new URL("../../../../node_modules/.bin/buf", import.meta.url));
  for (const reflect of ["grpc-v1", "grpc-v1alpha"]) {
    const { stdout } = await promisify(execFile)(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", reflect, "--list-methods", server.url], { timeout: 30_000 });
    const methods = stdout.split("\n");
    for (const m of ["CreateVm", "BootVm", "ListVms", "WatchVms"]) assert.ok(methods.includes(`vmm.v1.VmService/${m}`), `${reflect} lists ${m}: ${stdout}`);
  }
});
