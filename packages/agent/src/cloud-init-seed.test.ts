import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { CloudInitSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { ensureDebianPackages } from "@quantix/testing";
import { parse } from "yaml";
import { buildCloudInitSeed } from "./cloud-init-seed.js";

const run = promisify(execFile);
let dir: string;

before(async () => {
  await ensureDebianPackages(["genisoimage"]);
  dir = await mkdtemp(path.join(os.tmpdir(), "quantix-ci-seed-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A file of the ISO, read back with isoinfo (genisoimage's reader), by its Rock Ridge name. */
const isoFile = async (iso: string, name: string) => (await run("isoinfo", ["-R", "-i", iso, "-x", `/${name}`])).stdout;

test("the seed is an ISO 9660 volume 'cidata' holding user-data as given, meta-data with the VM's instance-id, and network-config", async () => {
  const seed = path.join(dir, "a.iso");
  // Text that would break a command line or a shell if it ever reached one.
  const userData = "#cloud-config\nhostname: h1\nruncmd:\n  - echo '$(reboot)' ; `id` \"quoted\" -output /etc/passwd\n";
  const networkConfig = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";
  await buildCloudInitSeed("vm-a", create(CloudInitSchema, { userData, metaData: "local-hostname: web-1\n", networkConfig }), seed);
  const info = (await run("isoinfo", ["-d", "-i", seed])).stdout;
  assert.match(info, /^Volume id: cidata$/m);
  const names = (await run("isoinfo", ["-R", "-f", "-i", seed])).stdout.trim().split("\n").sort();
  assert.deepEqual(names, ["/meta-data", "/network-config", "/user-data"]);
  assert.equal(await isoFile(seed, "user-data"), userData);
  assert.deepEqual(parse(await isoFile(seed, "meta-data")), { "instance-id": "vm-a", "local-hostname": "web-1" });
  assert.equal(await isoFile(seed, "network-config"), networkConfig);
  assert.deepEqual((await readdir(dir)).sort(), ["a.iso"], "no staging directory or temp file left");
});

test("without network-config there is no such file; the hostname defaults to the VM id", async () => {
  const seed = path.join(dir, "b.iso");
  await buildCloudInitSeed("vm_b", create(CloudInitSchema, { userData: "#!/bin/sh\necho hi\n" }), seed);
  const names = (await run("isoinfo", ["-R", "-f", "-i", seed])).stdout.trim().split("\n").sort();
  assert.deepEqual(names, ["/meta-data", "/user-data"]);
  assert.deepEqual(parse(await isoFile(seed, "meta-data")), { "instance-id": "vm_b", "local-hostname": "vm-b" });
});

test("a host without genisoimage gets FAILED_PRECONDITION naming the package, and no file", async () => {
  const seed = path.join(dir, "c.iso");
  const err = await buildCloudInitSeed("vm-c", create(CloudInitSchema, { userData: "x" }), seed, "/nonexistent/genisoimage").then(() => assert.fail("built"), (e: unknown) => e);
  assert.ok(err instanceof QuantixError);
  assert.equal(err.code, "failed_precondition");
  assert.match(err.message, /install the Debian package genisoimage/);
  assert.equal(existsSync(seed), false);
  assert.equal(existsSync(path.join(dir, "cidata.d")), false);
});
