import { createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import net from "node:net";
import { QuantixError } from "@quantix/core";
import type { QmpClient } from "./qmp-client.js";

/**
 * Hibernation of a QEMU guest (as Proxmox's `qm suspend --todisk`): its memory and
 * device state, QEMU's migration stream, saved to a file and loaded back.
 *
 * QEMU 7.2 (Debian 12, these hosts) has no `file:` migration URI (it arrived in 8.2:
 * "unknown migration protocol" here), and `exec:` would hand a shell command to QEMU, so
 * saving sends the stream to a unix socket the agent listens on in the VM's directory
 * and writes it to the file itself; loading gives QEMU the file as an inherited
 * descriptor (`migrate-incoming fd:N`). Both work on every QEMU version.
 */

/** The part of query-migrate's answer we read. */
interface QueryMigrate {
  status?: string;
  "error-desc"?: string;
}

const POLL_MS = 100;
/** QEMU's max-bandwidth for a save to disk: no limit (QEMU 7.2's default is 128 MiB/s). */
const UNLIMITED_BYTES_PER_SECOND = 1e12;

/**
 * Saves a stopped guest's state to `stateFile` through `socketPath`, within `timeoutMs`.
 * The file appears (renamed from `<stateFile>.tmp`) only once QEMU reported completion
 * and every byte is on disk; on any failure no file is left and ABORTED says why.
 */
export async function saveState(qmp: QmpClient, socketPath: string, stateFile: string, timeoutMs: number): Promise<void> {
  const tmp = `${stateFile}.tmp`;
  await Promise.all([rm(socketPath, { force: true }), rm(tmp, { force: true })]);
  const out = createWriteStream(tmp, { mode: 0o600 });
  let received: Promise<void> | undefined;
  const server = net.createServer({ pauseOnConnect: false }, (conn) => {
    server.close(); // one connection only: QEMU's
    received ??= new Promise<void>((resolve, reject) => {
      conn.on("error", reject);
      out.on("error", reject);
      out.on("finish", () => resolve());
      conn.pipe(out);
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    await qmp.execute("migrate-set-parameters", { "max-bandwidth": UNLIMITED_BYTES_PER_SECOND });
    await qmp.execute("migrate", { uri: `unix:${socketPath}` });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const q = await qmp.execute<QueryMigrate>("query-migrate");
      if (q.status === "completed") break;
      if (q.status === "failed" || q.status === "cancelled") throw new QuantixError("aborted", `saving the guest's memory failed: ${q["error-desc"] ?? q.status}`);
      if (Date.now() > deadline) {
        await qmp.execute("migrate_cancel").catch(() => {});
        throw new QuantixError("deadline_exceeded", `saving the guest's memory took longer than ${Math.round(timeoutMs / 1000)} s`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    // QEMU closes its end once the stream is complete; then the file has every byte.
    if (!received) throw new QuantixError("internal", "QEMU reported the save complete without connecting to the agent");
    await withTimeout(received, Math.max(1000, deadline - Date.now()), "the saved stream did not end");
    const fh = await open(tmp, "r+");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, stateFile);
  } catch (err) {
    out.destroy();
    await rm(tmp, { force: true });
    throw err;
  } finally {
    server.close();
    await rm(socketPath, { force: true });
  }
}

/**
 * Loads the state into a QEMU started with `-incoming defer` that inherited the state
 * file as descriptor `fd`, then lets the guest run (the stream records the guest as
 * stopped, since it was saved stopped, so QEMU's autostart alone would leave it paused).
 */
export async function loadState(qmp: QmpClient, fd: number, timeoutMs: number): Promise<void> {
  if (!Number.isInteger(fd) || fd < 3) throw new QuantixError("internal", `no inherited descriptor for the saved state (got ${fd})`);
  await qmp.execute("migrate-incoming", { uri: `fd:${fd}` });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const q = await qmp.execute<QueryMigrate>("query-migrate");
    if (q.status === "completed") break;
    if (q.status === "failed" || q.status === "cancelled") throw new QuantixError("aborted", `loading the saved memory failed: ${q["error-desc"] ?? q.status}`);
    if (Date.now() > deadline) throw new QuantixError("deadline_exceeded", `loading the saved memory took longer than ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  // "completed" is set just before QEMU leaves the inmigrate run state: a "cont" before
  // that would only set autostart, which the recorded stopped state then overrides.
  for (;;) {
    const status = await qmp.execute<{ running: boolean; status: string }>("query-status");
    if (status.status !== "inmigrate") {
      if (!status.running) await qmp.execute("cont");
      return;
    }
    if (Date.now() > deadline) throw new QuantixError("deadline_exceeded", "QEMU did not leave the incoming state after loading the saved memory");
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new QuantixError("deadline_exceeded", what)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
