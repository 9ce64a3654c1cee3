import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { runNode, until } from "@quantix/testing";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const MIB = 1024n * 1024n;

test("an agent on the simulated backend checks kernel, initrd and disk paths as the real backends' agents do", async () => {
  const dir = await mkdtemp(join(tmpdir(), "quantix-sim-paths-"));
  const images = join(dir, "images");
  await mkdir(images);
  await writeFile(join(images, "vmlinuz"), "kernel");
  await writeFile(join(images, "root.img"), "disk");
  await symlink("/etc/shadow", join(images, "shadow.img"));
  execFileSync("mkfifo", [join(images, "pipe.img")]);
  await mkdir(join(images, "dir.img"));
  const p = runNode(["--import", "tsx", MAIN], { VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "state"), VMCP_IMAGE_DIRS: images });
  try {
    const url = await until(() => /"url":"(http:[^"]+)"/.exec(p.out())?.[1], "the listening line", 30_000);
    const c = createClient(VmService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    const config = (kernelPath: string, ...disks: string[]) => ({
      cpu: { vcpuCount: 1 },
      memory: { sizeBytes: 128n * MIB },
      boot: { kernelPath },
      storage: disks.map((path, i) => ({ id: `d${i}`, path })),
    });
    const refused = await c.createVm({ vmId: "bad", config: config("/etc/shadow", "/dev/sda", join(images, "shadow.img"), join(images, "pipe.img"), join(images, "dir.img")) }).then(
      () => assert.fail("created"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(refused.code, Code.InvalidArgument);
    // The message is cut at 512 bytes; every violation is in the BadRequest detail.
    const fields = refused.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
    for (const field of ["boot.kernel_path", "storage[0].path", "storage[1].path", "storage[2].path", "storage[3].path"]) {
      assert.ok(fields.includes(`config.${field}`) || refused.rawMessage.includes(`config.${field}`), `${field} is refused: ${fields.join(", ")} / ${refused.rawMessage}`);
    }
    assert.deepEqual((await c.listVms({})).vms, [], "nothing was created");
    await c.createVm({ vmId: "good", config: config(join(images, "vmlinuz"), join(images, "root.img")) });
    assert.equal((await c.bootVm({ vmId: "good" })).state, VmState.RUNNING);
    p.child.kill("SIGTERM");
    assert.equal(await p.exited, 0);
  } finally {
    p.child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});
