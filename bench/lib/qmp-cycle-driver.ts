import { createInterface } from "node:readline";
import { QmpClient } from "@quantix/agent";
import { nowMs, sleep, withTimeout } from "./stats.js";

// The hot attach baseline's QMP client (lib/hot-attach.ts), a process of its own so that it
// runs pinned to CPU 0 beside the QEMUs and the agent, as the agent does:
//   taskset -c 0 node --import tsx bench/lib/qmp-cycle-driver.ts <qmp socket> <qcow2> <pci slot>
// Prints {"ready":true} once connected; then, for each line "cycle" on stdin, runs one attach
// + detach cycle and prints {"ms":[total, attach, detach]}; "quit" (or stdin's end) closes.

const [socket, disk, slotText] = process.argv.slice(2);
if (socket === undefined || disk === undefined || slotText === undefined) throw new Error("usage: qmp-cycle-driver.ts <qmp socket> <qcow2> <pci slot>");
const slot = Number(slotText);
const UNPLUG_MS = 60_000;

const qmp = await QmpClient.connect(socket, { timeoutMs: 30_000 });
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);

/** blockdev-add (file), blockdev-add (qcow2), device_add; device_del, DEVICE_DELETED, blockdev-del ×2. */
async function cycle(): Promise<number[]> {
  const t0 = nowMs();
  await qmp.execute("blockdev-add", { driver: "file", "node-name": "bd-file", filename: disk, "read-only": false });
  await qmp.execute("blockdev-add", { driver: "qcow2", "node-name": "bd", file: "bd-file", "read-only": false, backing: null });
  await qmp.execute("device_add", { driver: "virtio-blk-pci", id: "bd-dev", drive: "bd", bus: "pci.0", addr: `0x${slot.toString(16)}` });
  const t1 = nowMs();
  let off = (): void => undefined;
  const deleted = new Promise<void>((resolve) => {
    off = qmp.onEvent((e) => {
      if (e.event === "DEVICE_DELETED" && (e.data as { device?: string } | undefined)?.device === "bd-dev") resolve();
    });
  });
  await qmp.execute("device_del", { id: "bd-dev" });
  await withTimeout(deleted, UNPLUG_MS, "DEVICE_DELETED").finally(off);
  await blockdevDel("bd");
  await blockdevDel("bd-file");
  const t2 = nowMs();
  return [t2 - t0, t1 - t0, t2 - t1];
}

/** blockdev-del, again every 10 ms (as the agent) while QEMU still reports the node in use right after DEVICE_DELETED. */
async function blockdevDel(node: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      await qmp.execute("blockdev-del", { "node-name": node });
      return;
    } catch (err) {
      if (!/in use/i.test(String(err)) || Date.now() > deadline) throw err;
      await sleep(10);
    }
  }
}

try {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "quit") break;
    if (line === "cycle") process.stdout.write(`${JSON.stringify({ ms: await cycle() })}\n`);
  }
} finally {
  qmp.close();
}
