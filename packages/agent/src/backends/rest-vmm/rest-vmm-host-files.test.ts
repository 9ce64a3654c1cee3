import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { until } from "@quantix/testing";
import type { Backend } from "../../backend.js";
import type { VmmFlavor } from "../../testing/api-spec.js";
import { standInBinary, violationLog } from "../../testing/stand-in-fixture.js";
import { createCloudHypervisorBackend } from "../cloud-hypervisor/cloud-hypervisor-backend.js";
import { createFirecrackerBackend } from "../firecracker/firecracker-backend.js";
import type { RestVmmBackendOptions } from "./rest-vmm-backend.js";

/**
 * Cloud Hypervisor and Firecracker are handed the files the agent opened and checked
 * (host-files.ts), as QEMU is: a kernel or disk swapped for a symlink to a secret after
 * the check never reaches the VMM. Against the stand-in VMMs, which open the files their
 * API requests name, as the real ones do, and print their first bytes.
 */

const violations = violationLog();
const FACTORIES: Record<VmmFlavor, (o: RestVmmBackendOptions) => Backend> = {
  "cloud-hypervisor": createCloudHypervisorBackend,
  firecracker: createFirecrackerBackend,
};

for (const flavor of ["cloud-hypervisor", "firecracker"] as const) {
  describe(`${flavor}: host files`, () => {
    /** An image dir with a kernel and a disk, secrets outside it, and a backend (with `beforeSpawn`) on them. */
    function setup(beforeSpawn?: (files: { kernel: string; disk: string; secrets: string }) => void) {
      const root = mkdtempSync(`/tmp/qx-hf-${flavor === "firecracker" ? "fc" : "ch"}-`);
      const images = join(root, "images");
      const secrets = join(root, "secrets");
      mkdirSync(images);
      mkdirSync(secrets);
      const kernel = join(images, "vmlinux");
      const disk = join(images, "root.img");
      writeFileSync(kernel, "CHECKED-KERNEL");
      writeFileSync(disk, "CHECKED-DISK");
      writeFileSync(join(secrets, "kernel"), "SECRET-KERNEL");
      writeFileSync(join(secrets, "disk"), "SECRET-DISK");
      const backend = FACTORIES[flavor]({
        binary: standInBinary(flavor),
        stateDir: root,
        imageDirs: [images],
        ...(beforeSpawn ? { beforeSpawn: async () => beforeSpawn({ kernel, disk, secrets }) } : {}),
      });
      const config = create(VmConfigSchema, {
        cpu: { vcpuCount: 1 },
        memory: { sizeBytes: 128n * 1024n * 1024n },
        boot: { kernelPath: kernel, kernelArgs: "console=ttyS0" },
        storage: [{ id: "root", path: disk, isRootDevice: true }],
        console: { enabled: true },
      });
      return { root, kernel, disk, secrets, backend, config };
    }
    const swap = (file: string, secret: string) => {
      renameSync(file, `${file}.moved`);
      symlinkSync(secret, file);
    };

    it("refuses to boot a kernel swapped for a symlink to a secret after CreateVm, starting no VMM", async () => {
      const s = setup();
      try {
        await s.backend.createVM("swapped", s.config);
        swap(s.kernel, join(s.secrets, "kernel"));
        await assert.rejects(s.backend.bootVM("swapped"), (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition" && /boot\.kernel_path .*not a file under an image directory/.test(e.message));
        assert.equal((await s.backend.getVMInfo("swapped")).pid, undefined, "no VMM was started");
        violations.assertNone();
      } finally {
        await s.backend.close();
        rmSync(s.root, { recursive: true, force: true });
      }
    });

    it("gives the VMM the checked kernel and disk even when their names lead to secrets by the time it opens them", async () => {
      let swapped = false;
      const s = setup(({ kernel, disk, secrets }) => {
        swap(kernel, join(secrets, "kernel"));
        swap(disk, join(secrets, "disk"));
        swapped = true;
      });
      try {
        await s.backend.createVM("checked", s.config);
        await s.backend.bootVM("checked");
        assert.ok(swapped);
        const text = await until(async () => {
          const t = new TextDecoder().decode(await s.backend.consoleTail("checked", 1 << 16));
          return /CHECKED-DISK/.test(t) ? t : undefined;
        }, "the VMM's console naming the files it opened", 10_000);
        assert.match(text, /kernel begins "CHECKED-KERNEL"/);
        assert.match(text, /(disk|drive) root begins "CHECKED-DISK"/);
        assert.doesNotMatch(text, /SECRET/);
        violations.assertNone();
        await s.backend.shutdownVM("checked", { force: true, timeoutSeconds: 1 });
      } finally {
        await s.backend.close();
        rmSync(s.root, { recursive: true, force: true });
      }
    });
  });
}
