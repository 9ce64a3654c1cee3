import { createServer } from "node:net";
import { QuantixError } from "@quantix/core";
import type { QmpClient } from "./qmp-client.js";

/**
 * The target half of a migration that copies disks (as libvirt and Proxmox do it): the
 * QEMU waiting for the incoming state serves its disks' block nodes over NBD, writable,
 * one export per copied disk named after the node ("disk0", ...: names the agent made,
 * never a user string), and the source mirrors into them. Exporting a node activates
 * it, although the incoming migration has not completed (QEMU's block export code does
 * so for exactly this use). The server is stopped once the guest runs here.
 */

/** The QMP calls these steps make. */
export type Qmp = Pick<QmpClient, "execute">;

/** Finds a free TCP port on `host`: QEMU's nbd-server-start cannot report the port it picked for 0. */
export type PortPicker = (host: string) => Promise<number>;

/** How many free ports are tried before giving up (another listener may take one first). */
const PORT_ATTEMPTS = 5;

/** Asks the kernel for a free port on `host` and releases it for QEMU to take. */
export const pickFreePort: PortPicker = (host) =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port"))));
    });
  });

/**
 * Starts QEMU's NBD server on `host` and exports each of `nodes` writable under its own
 * name; answers the storage URI "tcp:<host>:<port>" the source mirrors to.
 */
export async function exportDisks(qmp: Qmp, host: string, nodes: readonly string[], pickPort: PortPicker = pickFreePort): Promise<string> {
  let port = 0;
  for (let attempt = 1; port === 0; attempt++) {
    const candidate = await pickPort(host);
    try {
      await qmp.execute("nbd-server-start", { addr: { type: "inet", data: { host, port: String(candidate) } } });
      port = candidate;
    } catch (err) {
      if (attempt >= PORT_ATTEMPTS || !/in use/i.test(String(err))) throw new QuantixError("unavailable", `QEMU could not serve the disks to copy over NBD on ${host}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  for (const node of nodes) await qmp.execute("block-export-add", { type: "nbd", id: exportId(node), "node-name": node, name: node, writable: true });
  return `tcp:${host}:${port}`;
}

/** Stops the NBD server and its exports; a server that is not running is no error. */
export async function stopDiskExports(qmp: Qmp): Promise<void> {
  await qmp.execute("nbd-server-stop").catch(() => undefined);
}

/** The block export's id for a node. */
export function exportId(node: string): string {
  return `mig-export-${node}`;
}
