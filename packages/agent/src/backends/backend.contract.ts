import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { clone, create, equals } from "@bufbuild/protobuf";
import { NetworkInterfaceType, StorageDeviceSchema, StorageInterfaceType, VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { isProcessAlive as alive, until } from "@quantix/testing";
import type { Backend, BackendCapability, BackendEvent } from "../backend.js";

/** One backend under test, freshly opened on its own state. */
export interface OpenedBackend {
  readonly backend: Backend;
  /** A config this backend can boot. */
  readonly config: VmConfig;
  /** Stops what the test left behind (processes, files) and closes the backend(s). */
  cleanup(): Promise<void>;
  /** A second backend on the same state (an agent restart); needed by the "readopt" case. */
  reopen?: () => Promise<Backend>;
}

/** Knobs for backends that differ in ways the contract cannot discover. */
export interface BackendContractOptions {
  /** Whether VMs run as host processes with a pid (false for the simulator). Default true. */
  readonly processes?: boolean;
  /** The VM's state directory, checked to be gone after delete; omit if the backend has none. */
  readonly vmDir?: (vmId: string) => string;
  /** Runs after every case, before cleanup (e.g. "the stand-in saw no spec violation"). */
  readonly afterEach?: () => Promise<void> | void;
  /** Deadline for boots, stops and observed events. Default 20 s. */
  readonly timeoutMs?: number;
  /**
   * Text the guest prints on its console once per boot. With it, the reboot case checks
   * the guest really started again (the marker appears once more after each reboot), so
   * a reboot that does nothing fails. Omit for a backend whose guest prints nothing.
   */
  readonly bootMarker?: string;
}

type Case = (o: OpenedBackend, vmId: string) => Promise<void>;

let counter = 0;

/** Registers the cases every Backend must pass (STYLE rule 7: one suite per port). */
export function backendContract(name: string, open: () => Promise<OpenedBackend>, options: BackendContractOptions = {}): void {
  const processes = options.processes ?? true;
  const timeoutMs = options.timeoutMs ?? 20_000;
  const run = (title: string, body: Case, skip?: (b: Backend) => string | undefined): void => {
    test(`${name} backend: ${title}`, { timeout: timeoutMs * 4 }, async (t) => {
      const o = await open();
      try {
        const why = skip?.(o.backend);
        if (why) return t.skip(why);
        await body(o, `contract-${process.pid}-${++counter}`);
        await options.afterEach?.();
      } finally {
        await o.cleanup();
      }
    });
  };
  const needs = (cap: BackendCapability) => (b: Backend) => (b.capabilities.has(cap) ? undefined : `the backend does not declare "${cap}"`);
  const state = async (b: Backend, vmId: string) => (await b.getVMInfo(vmId)).state;
  const booted = async ({ backend, config }: OpenedBackend, vmId: string) => {
    await backend.createVM(vmId, config);
    await backend.bootVM(vmId);
    assert.equal(await state(backend, vmId), "running");
  };

  run("createVM defines a VM in state created, listed with its config", async ({ backend, config }, vmId) => {
    await backend.createVM(vmId, config);
    const info = await backend.getVMInfo(vmId);
    assert.equal(info.state, "created");
    assert.ok(equals(VmConfigSchema, info.config, config), "getVMInfo returns the config as created");
    assert.deepEqual((await backend.listVMs()).map((v) => v.vmId), [vmId]);
  });

  run("bootVM runs the guest, with a pid and a growing uptime", async (o, vmId) => {
    await booted(o, vmId);
    const info = await o.backend.getVMInfo(vmId);
    if (processes) assert.ok(info.pid !== undefined && alive(info.pid), "a live VMM process is reported");
    assert.ok(info.startedAtMs !== undefined);
    await until(async () => ((await o.backend.getVMInfo(vmId)).metrics.uptimeSeconds >= 1n ? true : undefined), "uptime of 1 s", timeoutMs);
  });

  run("pauseVM and resumeVM move between paused and running", async (o, vmId) => {
    await booted(o, vmId);
    await o.backend.pauseVM(vmId);
    assert.equal(await state(o.backend, vmId), "paused");
    await o.backend.resumeVM(vmId);
    assert.equal(await state(o.backend, vmId), "running");
  }, needs("pause"));

  run("suspendVM ends the VMM with the VM suspended; resumeVM runs it again; shutdownVM discards a suspended VM", async (o, vmId) => {
    const suspend = o.backend.suspendVM?.bind(o.backend);
    if (!suspend) throw new Error("a backend declaring suspend must implement suspendVM");
    await booted(o, vmId);
    const pid = (await o.backend.getVMInfo(vmId)).pid;
    await suspend(vmId);
    const info = await o.backend.getVMInfo(vmId);
    assert.equal(info.state, "suspended");
    assert.equal(info.pid, undefined, "no VMM process while suspended");
    if (processes && pid !== undefined) assert.equal(alive(pid), false, "the VMM process ended");
    await o.backend.resumeVM(vmId);
    assert.equal(await state(o.backend, vmId), "running");
    await suspend(vmId);
    await o.backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
    assert.equal(await state(o.backend, vmId), "shutdown");
    await o.backend.bootVM(vmId);
    assert.equal(await state(o.backend, vmId), "running");
  }, needs("suspend"));

  run("rebootVM restarts the guest and keeps the VM running", async (o, vmId) => {
    await booted(o, vmId);
    const pid = (await o.backend.getVMInfo(vmId)).pid;
    const marker = options.bootMarker;
    const watch = marker !== undefined && o.backend.capabilities.has("console");
    // How many boots the console shows so far (the ring holds far more than a test prints).
    const boots = async () => new TextDecoder().decode(await o.backend.consoleTail(vmId, 1 << 20)).split(marker!).length - 1;
    const bootsReach = (n: number, what: string) => until(async () => ((await boots()) >= n ? true : undefined), what, timeoutMs);
    if (watch) await bootsReach(1, "the first boot's marker");
    for (const [i, force] of [false, true].entries()) {
      await o.backend.rebootVM(vmId, force);
      if (watch) await bootsReach(i + 2, `the marker again after the ${force ? "forced" : "graceful"} reboot`);
      const info = await o.backend.getVMInfo(vmId);
      assert.equal(info.state, "running");
      if (processes) assert.equal(info.pid, pid, "a reboot keeps the VMM process");
    }
  }, needs("reboot"));

  for (const force of [false, true]) {
    run(`shutdownVM (${force ? "forced" : "graceful"}) stops the guest and its process`, async (o, vmId) => {
      await booted(o, vmId);
      const pid = (await o.backend.getVMInfo(vmId)).pid;
      await o.backend.shutdownVM(vmId, { force, timeoutSeconds: 10 });
      const info = await o.backend.getVMInfo(vmId);
      assert.equal(info.state, "shutdown");
      assert.equal(info.pid, undefined);
      if (processes && pid !== undefined) assert.equal(alive(pid), false, "the VMM process is gone");
      await o.backend.bootVM(vmId);
      assert.equal(await state(o.backend, vmId), "running", "a shut down VM boots again");
    }, force ? undefined : needs("graceful-shutdown"));
  }

  run("a VMM killed with SIGKILL is reported crashed, with a reason", async (o, vmId) => {
    const events: BackendEvent[] = [];
    o.backend.onEvent((e) => events.push(e));
    await booted(o, vmId);
    const pid = (await o.backend.getVMInfo(vmId)).pid;
    assert.ok(pid !== undefined);
    process.kill(pid, "SIGKILL");
    const event = await until(() => events.find((e) => e.vmId === vmId && e.state === "crashed"), "a crashed event", timeoutMs);
    assert.ok(event.reason && event.reason.length > 0, "the event says why");
    const info = await o.backend.getVMInfo(vmId);
    assert.equal(info.state, "crashed");
    assert.ok(info.crashReason);
  }, () => (processes ? undefined : "the backend runs no processes to kill"));

  run("deleteVM frees the process and the state directory", async (o, vmId) => {
    await booted(o, vmId);
    const pid = (await o.backend.getVMInfo(vmId)).pid;
    await o.backend.shutdownVM(vmId, { force: true, timeoutSeconds: 1 });
    await o.backend.deleteVM(vmId);
    await assert.rejects(o.backend.getVMInfo(vmId), (e: unknown) => e instanceof QuantixError && e.code === "not_found");
    assert.deepEqual(await o.backend.listVMs(), []);
    if (processes && pid !== undefined) assert.equal(alive(pid), false);
    if (options.vmDir) assert.equal(existsSync(options.vmDir(vmId)), false, "the state directory is removed");
  });

  run("getVMInfo of an unknown id is NOT_FOUND", async ({ backend }) => {
    await assert.rejects(backend.getVMInfo("no-such-vm"), (e: unknown) => e instanceof QuantixError && e.code === "not_found");
  });

  run("createVM rejects a device model the backend lacks with FAILED_PRECONDITION naming it", async ({ backend, config }, vmId) => {
    const missing: [BackendCapability, (c: VmConfig) => void][] = [
      ["nvme", (c) => c.storage.push(create(StorageDeviceSchema, { id: "nv", path: "/nonexistent.img", interfaceType: StorageInterfaceType.NVME }))],
      ["sata", (c) => c.storage.push(create(StorageDeviceSchema, { id: "sa", path: "/nonexistent.img", interfaceType: StorageInterfaceType.SATA }))],
      ["e1000", (c) => c.network.forEach((n) => (n.interfaceType = NetworkInterfaceType.E1000))],
    ];
    let checked = 0;
    for (const [cap, change] of missing) {
      if (backend.capabilities.has(cap)) continue;
      const bad = clone(VmConfigSchema, config);
      change(bad);
      if (cap === "e1000" && bad.network.length === 0) continue;
      await assert.rejects(backend.createVM(vmId, bad), (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition" && e.message.includes(cap));
      checked++;
    }
    assert.deepEqual(await backend.listVMs(), [], "nothing was created");
    if (checked === 0) assert.ok(["nvme", "sata", "e1000"].every((c) => backend.capabilities.has(c as BackendCapability)));
  });

  run("console output appears in consoleTail and followConsole", async (o, vmId) => {
    await o.backend.createVM(vmId, o.config);
    assert.equal((await o.backend.consoleTail(vmId, 4096)).length, 0, "no output before the first boot");
    const abort = new AbortController();
    const first = (async () => {
      for await (const chunk of o.backend.followConsole(vmId, abort.signal)) if (chunk.data.length > 0) return chunk;
      return undefined;
    })();
    await o.backend.bootVM(vmId);
    await until(async () => ((await o.backend.consoleTail(vmId, 4096)).length > 0 ? true : undefined), "console output", timeoutMs);
    const chunk = await first;
    abort.abort();
    assert.ok(chunk && chunk.data.length > 0, "a follower sees new output");
    if (o.backend.consolePosition) {
      // The chunk's offset is a position in the same numbering as consolePosition, and a
      // follower from offset 0 replays what is still buffered from there.
      const pos = await o.backend.consolePosition(vmId);
      assert.ok(chunk.offset >= pos.start - chunk.data.length && chunk.offset + chunk.data.length <= pos.end, `chunk at ${chunk.offset} outside ${pos.start}-${pos.end}`);
      const replay = new AbortController();
      for await (const again of o.backend.followConsole(vmId, replay.signal, 0)) {
        assert.equal(again.offset, pos.start);
        assert.ok(again.data.length >= pos.end - pos.start);
        break;
      }
      replay.abort();
    }
  }, needs("console"));

  run("close() leaves a running VM running and a new backend re-adopts it", async (o, vmId) => {
    if (!o.reopen) throw new Error("a backend declaring readopt must give the contract reopen()");
    await booted(o, vmId);
    const before = await o.backend.getVMInfo(vmId);
    await o.backend.close();
    if (processes && before.pid !== undefined) assert.ok(alive(before.pid), "close() leaves the VMM running");
    const again = await o.reopen();
    assert.deepEqual(await again.recover(), [vmId]);
    const info = await again.getVMInfo(vmId);
    assert.equal(info.state, "running");
    assert.equal(info.pid, before.pid);
    assert.ok(equals(VmConfigSchema, info.config, o.config));
    await again.shutdownVM(vmId, { force: false, timeoutSeconds: 10 });
    assert.equal((await again.getVMInfo(vmId)).state, "shutdown");
  }, needs("readopt"));
}
