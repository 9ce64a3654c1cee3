import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VolumeSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { FloatingIpSchema } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { FLOATING_IP_KIND, newQuota, QUOTA_KIND, usedOf, VM_KIND, VOLUME_KIND, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { FakeClock } from "@quantix/testing";
import { MemoryStore } from "../store/memory-store.js";
import { quotaUsageController } from "./quota-usage.js";

const vm = (projectId: string, cores: number) => create(VirtualMachineSchema, { id: crypto.randomUUID(), projectId, name: `vm-${crypto.randomUUID().slice(0, 8)}`, spec: { cpu: { cores }, memory: { sizeMib: 512n } } });

test("the usage controller recounts each project from the VMs that exist and corrects a quota that differs, saying so", async () => {
  const clock = new FakeClock();
  const store: Store = new MemoryStore({ clock });
  const warnings: Record<string, unknown>[] = [];
  const log: Logger = { log: (level, msg, fields) => void (level === "warn" && msg.includes("quota use") && warnings.push(fields ?? {})) };
  // VMs written without the ledger (as a store older than quotas holds them): one project with no quota, one whose quota is wrong.
  for (const cores of [1, 2, 3]) await store.of(VM_KIND).create(vm("p-none", cores));
  await store.of(VM_KIND).create(vm("p-wrong", 4));
  await store.of(VOLUME_KIND).create(create(VolumeSchema, { id: crypto.randomUUID(), projectId: "p-none", name: "v", spec: { sizeGib: 7n, poolId: "pool" } }));
  await store.of(FLOATING_IP_KIND).create(create(FloatingIpSchema, { id: crypto.randomUUID(), projectId: "p-wrong", externalNetworkId: crypto.randomUUID(), address: "203.0.113.10" }));
  await store.of(QUOTA_KIND).create({ ...newQuota("p-wrong", clock.now()), used: { $typeName: "Quantixkvm.quota.v1.QuotaUsage", vms: 7n, vcpus: 1n, memoryMib: 0n, volumes: 2n, volumeGib: 0n, networks: 3n, floatingIps: 2n } });
  await store.of(QUOTA_KIND).create(newQuota("p-empty", clock.now()));
  const c = quotaUsageController({ store, clock, timers: clock, log });
  await c.start();
  await c.idle();
  await c.stop();
  const none = usedOf(await store.of(QUOTA_KIND).get("p-none"));
  assert.deepEqual([none.vms, none.vcpus, none.memory_mib, none.volumes, none.volume_gib], [3, 6, 1536, 1, 7]);
  const wrong = usedOf(await store.of(QUOTA_KIND).get("p-wrong"));
  assert.deepEqual([wrong.vms, wrong.vcpus, wrong.memory_mib, wrong.volumes, wrong.networks, wrong.floating_ips], [1, 4, 512, 0, 0, 1], "VM, volume, network and floating IP use corrected");
  assert.deepEqual(usedOf(await store.of(QUOTA_KIND).get("p-empty")).vms, 0);
  assert.deepEqual(warnings.map((w) => w["project_id"]).sort(), ["p-none", "p-wrong"]);
  assert.equal(warnings.find((w) => w["project_id"] === "p-wrong")?.["vms"], "7 -> 1");
});
