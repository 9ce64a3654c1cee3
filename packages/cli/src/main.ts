// The CLI's entry point for bin/quantix.mjs: the process's streams, its arguments, its exit code.
import { run } from "./cli.js";

const ac = new AbortController();
let interrupted = false;
process.on("SIGINT", () => {
  if (interrupted) process.exit(130);
  interrupted = true;
  ac.abort();
});
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
});
const code = await run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env, signal: ac.signal });
process.exitCode = interrupted && code === 0 ? 130 : code;
