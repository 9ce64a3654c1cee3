import { QuantixError } from "@quantix/core";
import { CA_USAGE, runCaCommand } from "./ca-command.js";

/** Entry point of `quantix ca`: the cluster CA and the control plane's certificate for a first setup. */
async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.length === 0 || args.includes("--help") || args[0] === "help") {
    process.stdout.write(`${CA_USAGE}\n`);
    process.exit(args.length === 0 ? 2 : 0);
  }
  try {
    process.stdout.write(await runCaCommand(args));
  } catch (err) {
    process.stderr.write(`quantix ca: ${err instanceof QuantixError ? err.message : String(err)}\n${err instanceof QuantixError && err.code === "invalid_argument" ? `\n${CA_USAGE}\n` : ""}`);
    process.exit(err instanceof QuantixError && err.code === "invalid_argument" ? 2 : 1);
  }
}

void main();
