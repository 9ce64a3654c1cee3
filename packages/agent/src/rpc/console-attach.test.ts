import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ConsoleRoleKind, VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import { openConsoleSession, type ConsoleInputInit } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { MAX_CONSOLE_SESSIONS } from "../console-sessions.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";
import { MAX_CONSOLE_INPUT_BYTES } from "./console-attach.js";

const config = { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1024n * 1024n }, boot: { kernelPath: "/boot/vmlinuz" } };

// One agent whose simulated backend echoes input, one whose backend takes none.
const servers: { server: AgentServer; backend: SimulatedBackend }[] = [];
let c: Client<typeof VmService>;
let noInput: Client<typeof VmService>;
before(async () => {
  for (const capabilities of [undefined, ["pause", "reboot", "graceful-shutdown", "console"] as const]) {
    const backend = new SimulatedBackend({ bootMs: 1, consoleIntervalMs: 0, ...(capabilities ? { capabilities: new Set(capabilities) } : {}) });
    const manager = new VmManager({ backend });
    await manager.start();
    servers.push({ backend, server: await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger }) });
  }
  c = createClient(VmService, createGrpcTransport({ baseUrl: servers[0]!.server.url }));
  noInput = createClient(VmService, createGrpcTransport({ baseUrl: servers[1]!.server.url }));
});
after(async () => {
  for (const s of servers) {
    await s.server.close();
    await s.backend.close();
  }
});

const attach = (vmId: string, o: { write?: boolean; force?: boolean; tailBytes?: number } = {}): ConsoleInputInit => ({ kind: { case: "attach", value: { vmId, ...o } } });
const session = (client: Client<typeof VmService>, first?: ConsoleInputInit) => openConsoleSession((input, opts) => client.attachConsole(input as never, opts), first);

async function bootedVm(client: Client<typeof VmService>, vmId: string): Promise<void> {
  await client.createVm({ vmId, config });
  await client.bootVm({ vmId });
}

test("AttachConsole: the writer's input is echoed by the simulated guest, a viewer sees it, force displaces, leaving frees the role", async () => {
  await bootedVm(c, "att-1");
  const a = session(c, attach("att-1", { write: true, tailBytes: 4096 }));
  const b = session(c, attach("att-1", { write: true }));
  try {
    // Scroll-back first: the boot line.
    await a.waitText("simulated console: booted att-1");
    assert.equal((await a.waitRole(() => true, "the first")).role, ConsoleRoleKind.WRITER);
    const bRole = await b.waitRole(() => true, "b's first");
    assert.equal(bRole.role, ConsoleRoleKind.VIEWER);
    assert.equal(bRole.writerPresent, true);
    assert.match(bRole.message, /held by another session/);

    a.type("echo hi\r");
    await a.waitText("echo hi");
    await b.waitText("echo hi");
    // A viewer's input is dropped and answered.
    const seen = b.roles.length;
    b.type("rm -rf /");
    const dropped = await b.waitRole((r) => r.droppedBytes > 0, "dropped input", seen);
    assert.equal(dropped.droppedBytes, 8);
    a.type("MARK1");
    await b.waitText("MARK1");
    assert.ok(!a.text().includes("rm -rf"), "the viewer's input never reached the guest");

    // A third session takes the role with force: a hears DISPLACED, and its input is dropped from then on.
    const before = a.roles.length;
    const f = session(c, attach("att-1", { write: true, force: true }));
    try {
      assert.equal((await f.waitRole(() => true, "f's first")).role, ConsoleRoleKind.WRITER);
      assert.equal((await a.waitRole((r) => r.role === ConsoleRoleKind.DISPLACED, "a displaced", before)).writerPresent, true);
      a.type("LATE");
      await a.waitRole((r) => r.droppedBytes === 4, "a's late input dropped", before);
      f.type("FORCED");
      await a.waitText("FORCED");
      // The writer leaves: the others hear the role is free.
      const bSeen = b.roles.length;
      await f.close();
      const free = await b.waitRole((r) => !r.writerPresent, "the role freed", bSeen);
      assert.equal(free.role, ConsoleRoleKind.VIEWER);
    } finally {
      await f.close();
    }
  } finally {
    await a.close();
    await b.close();
  }
  // Nothing is left attached.
  assert.equal(a.text().includes("LATE"), false, a.text());
});

test("AttachConsole: bad first message, unknown VM, force without write, oversized input", async () => {
  await bootedVm(c, "att-2");
  const early = session(c, { kind: { case: "data", value: new Uint8Array([65]) } });
  const e1 = await early.ended;
  assert.equal(e1?.code, Code.FailedPrecondition);
  assert.match(e1.rawMessage, /first AttachConsole message must be attach/);

  const e2 = await session(c, attach("no-such-vm")).ended;
  assert.equal(e2?.code, Code.NotFound);
  assert.match(e2.rawMessage, /no-such-vm/);

  const e3 = await session(c, attach("att-2", { force: true })).ended;
  assert.equal(e3?.code, Code.InvalidArgument);
  assert.match(e3.rawMessage, /attach\.force/);

  const e4 = await session(c, attach("att-2", { tailBytes: -1 })).ended;
  assert.equal(e4?.code, Code.InvalidArgument);
  assert.match(e4.rawMessage, /attach\.tail_bytes/);

  const big = session(c, attach("att-2", { write: true }));
  await big.waitRole(() => true, "attached");
  big.type(new Uint8Array(MAX_CONSOLE_INPUT_BYTES + 1));
  const e5 = await big.ended;
  assert.equal(e5?.code, Code.InvalidArgument);
  assert.match(e5.rawMessage, /data: must hold 1-4096 bytes, got 4097/);
});

test("AttachConsole: at most 16 sessions per VM; a backend without console-input refuses writers up front", async () => {
  await bootedVm(c, "att-3");
  const open = Array.from({ length: MAX_CONSOLE_SESSIONS }, () => session(c, attach("att-3")));
  try {
    for (const s of open) await s.waitRole(() => true, "attached");
    const over = await session(c, attach("att-3")).ended;
    assert.equal(over?.code, Code.ResourceExhausted);
    assert.match(over.rawMessage, /16 console sessions/);
  } finally {
    await Promise.all(open.map((s) => s.close()));
  }
  // Once they left, there is room again.
  const again = session(c, attach("att-3"));
  await again.waitRole(() => true, "attached after the others left");
  await again.close();

  await bootedVm(noInput, "att-4");
  const w = await session(noInput, attach("att-4", { write: true })).ended;
  assert.equal(w?.code, Code.FailedPrecondition);
  assert.match(w.rawMessage, /"console-input"/);
  // Viewing needs only the console.
  const v = session(noInput, attach("att-4", { tailBytes: 1000 }));
  await v.waitText("booted att-4");
  await v.close();
});

test("AttachConsole: the session ends OK when the VM is deleted", async () => {
  await bootedVm(c, "att-5");
  const s = session(c, attach("att-5", { write: true }));
  await s.waitRole(() => true, "attached");
  await c.shutdownVm({ vmId: "att-5", force: true });
  await c.deleteVm({ vmId: "att-5" });
  assert.equal(await s.ended, undefined);
});

test("AttachConsole: input is paced (64 KiB at once, then 64 KiB/s), not refused", async () => {
  await bootedVm(c, "att-6");
  const s = session(c, attach("att-6", { write: true }));
  await s.waitRole(() => true, "attached");
  const started = performance.now();
  // 96 KiB: the first 64 KiB go at once, the other 32 KiB take about half a second.
  for (let i = 0; i < 24; i++) s.type(new Uint8Array(4096).fill(0x61 + (i % 26)));
  s.type("END-OF-PASTE");
  await s.waitText("END-OF-PASTE", 20_000);
  const ms = performance.now() - started;
  assert.ok(ms >= 400, `96 KiB of input arrived in ${Math.round(ms)} ms; pacing at 64 KiB/s takes at least ~500 ms`);
  await s.close();
});
