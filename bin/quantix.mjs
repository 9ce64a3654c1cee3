#!/usr/bin/env node
// The `quantix` command: `quantix agent` is `npm run agent`, `quantix server` is `npm start`,
// `quantix ca` creates the cluster CA and certificates (docs/api/tls-and-enrollment.md),
// `quantix gateway` runs the MemoryGateway on its own port; every other command (vm, node,
// volume, ..., login, context, completion) is the CLI (packages/cli, docs/cli.md).
// Plain JavaScript, so it runs without a build: it registers tsx in this process and
// imports the TypeScript entry point, with the subcommand taken out of process.argv so the
// entry point sees only its own flags. It runs in the caller's directory (relative paths
// such as the agent's default ./.quantix-agent are relative to it).
import { register } from "tsx/esm/api";

const COMMANDS = {
  agent: { main: "../packages/agent/src/main.ts", about: "the host agent: serves vmm.v1 for this host (configured by VMCP_* variables or flags; quantix agent --help lists them)" },
  server: { main: "../packages/server/src/main.ts", about: "the control plane (configured by QUANTIX_* variables; see README.md)" },
  gateway: { main: "../packages/server/src/gateway/gateway-main.ts", about: "the MemoryGateway on its own port (QUANTIX_GATEWAY_ADDR, default 127.0.0.1:50051); the control plane serves it too (docs/api/memory-gateway.md)" },
  ca: { main: "../packages/server/src/pki/ca-main.ts", about: "the cluster CA and the control plane's TLS certificate for a first setup (quantix ca --help)" },
};

const CLI = { main: "../packages/cli/src/main.ts" };

const USAGE = `usage: quantix <command> [flags]

commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)} ${c.about}`).join("\n")}

resource commands (the control plane's API; docs/cli.md):
  vm, node, volume, image, snapshot, pool, network, port, security-group, floating-ip,
  load-balancer, vpn, project, user, service-account, token, quota, event, audit, migration
  login, logout, whoami, context, completion

quantix --help            this text
quantix agent --help      the agent's settings
quantix vm --help         a resource's commands (list, show, create, delete, start, ...)
`;

const [command, ...rest] = process.argv.slice(2);
if (command === undefined || command === "--help" || command === "-h" || command === "help") {
  process.stdout.write(USAGE);
  process.exit(command === undefined ? 2 : 0);
}
const chosen = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
if (!chosen) {
  // Everything else is the CLI, which answers unknown commands itself (exit 2).
  register();
  await import(new URL(CLI.main, import.meta.url).href);
} else {
  if (command === "gateway" && rest.includes("--help")) {
    process.stdout.write(`quantix gateway: ${chosen.about}\nIt takes no flags; set QUANTIX_GATEWAY_ADDR, QUANTIX_GATEWAY_DATA_DIR, QUANTIX_STORE, ... in the environment.\n`);
    process.exit(0);
  }
  if (command === "server" && rest.includes("--help")) {
    // The control plane takes no flags, so its help is said here rather than starting it.
    process.stdout.write(`quantix server: ${chosen.about}\nIt takes no flags; set QUANTIX_ADDR, QUANTIX_STORE, ... in the environment.\n`);
    process.exit(0);
  }
  process.argv.splice(2, 1);
  register();
  await import(new URL(chosen.main, import.meta.url).href);
}
