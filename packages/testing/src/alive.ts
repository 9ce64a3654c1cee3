/**
 * Whether `pid` is a running process, a zombie counting as gone. Tests that asked "did
 * QEMU stop?" with `process.kill(pid, 0)` could pass or hang on a process that had already
 * ended (a zombie still answers it); this is the agent's own supervision check.
 */
export { isProcessAlive } from "@quantix/agent";
