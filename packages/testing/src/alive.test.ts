import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { test } from "node:test";
import { isProcessAlive } from "./alive.js";
import { until } from "./until.js";

test("a zombie is not alive, though process.kill(pid, 0) still finds it", async () => {
  // The shell starts a child that exits after 0.5 s and at once exec's into a `sleep` that
  // never reaps it: a zombie. (A child that exited before the exec could be reaped by the
  // shell itself, so it lives long enough for the exec to come first.)
  const parent = spawn("sh", ["-c", "sleep 0.5 & echo $!; exec sleep 30"], { stdio: ["ignore", "pipe", "ignore"] });
  try {
    const [line] = (await once(parent.stdout!, "data")) as [Buffer];
    const zombie = Number(line.toString().trim());
    assert.ok(zombie > 0);
    await until(() => (isProcessAlive(zombie) ? undefined : true), "the child to become a zombie", 5000);
    assert.doesNotThrow(() => process.kill(zombie, 0), "kill(pid, 0) counts the zombie as alive");
    assert.equal(isProcessAlive(parent.pid!), true);
  } finally {
    parent.kill("SIGKILL");
  }
  await until(() => (isProcessAlive(parent.pid!) ? undefined : true), "the parent gone", 5000);
});
