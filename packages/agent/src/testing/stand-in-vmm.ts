import { rmSync } from "node:fs";
import { basename } from "node:path";
import type { VmmFlavor } from "./api-spec.js";
import { serveStandIn } from "./stand-in-server.js";

/*
 * A stand-in for the cloud-hypervisor and firecracker binaries, run as its own process:
 *   node --import tsx stand-in-vmm.ts --flavor firecracker --api-sock PATH [--id ID]
 *   node --import tsx stand-in-vmm.ts --flavor cloud-hypervisor --api-socket [path=]PATH
 * It serves the flavor's API on the unix socket, checks every request against the vendored
 * spec and appends what breaks it to PATH.violations (see stand-in-server.ts).
 */

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const flavor = arg("--flavor");
if (process.argv.includes("--version")) {
  // The real binaries' --version lines, e.g. "Firecracker v1.17.0" and "cloud-hypervisor v53.0".
  process.stdout.write(flavor === "firecracker" ? "Firecracker v1.17.0-standin\n" : "cloud-hypervisor v53.0-standin\n");
  process.exit(0);
}
if (flavor !== "firecracker" && flavor !== "cloud-hypervisor") {
  process.stderr.write("usage: stand-in-vmm --flavor firecracker|cloud-hypervisor --api-sock|--api-socket PATH\n");
  process.exit(2);
}
const socketArg = flavor === "firecracker" ? arg("--api-sock") : arg("--api-socket")?.replace(/^path=/, "");
if (!socketArg) {
  process.stderr.write(`${flavor} stand-in: the API socket path is required\n`);
  process.exit(2);
}
const apiSocket = socketArg;
rmSync(apiSocket, { force: true });
const exit = (code: number): never => {
  rmSync(apiSocket, { force: true });
  process.exit(code);
};
serveStandIn({ flavor: flavor as VmmFlavor, apiSocket, id: arg("--id") ?? basename(apiSocket), tickMs: 300, exit });
process.on("SIGTERM", () => exit(0));
process.on("SIGINT", () => exit(0));
