import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VmSpecSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ProjectSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { CreateVirtualNetworkRequestSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { DEFAULT_PROJECT_ID, PROJECT_KIND, randomIds, systemClock } from "@quantix/core";
import { MemoryStore } from "../store/memory-store.js";
import { VirtualNetworkService } from "./network-service.js";
import { SecurityGroupService } from "./security-group-service.js";
import { NicPorts } from "./vm-networks.js";

// Two NICs of one VM on one network are two ports created in one commit: the second
// never picks the address the first picked (both read the same allocations). With a
// random source that always starts at the pool's first address, both would pick it,
// and the VM's commit would fail on the duplicate allocation (found by CI, where the
// random starts collided).

test("two NICs on one network in one commit get different addresses, whatever the random source", async () => {
  const store = new MemoryStore();
  const deps = { store, clock: systemClock, ids: randomIds };
  const now = timestampFromMs(Date.now());
  await store.of(PROJECT_KIND).create(create(ProjectSchema, { id: DEFAULT_PROJECT_ID, name: "default", createdAt: now, updatedAt: now }) as never, { actor: "test" });
  const groups = new SecurityGroupService(deps);
  const ensureDefaultGroup = (projectId: string) => groups.ensureDefault(projectId);
  const net = await new VirtualNetworkService({ ...deps, ensureDefaultGroup }).create(create(CreateVirtualNetworkRequestSchema, { name: "twice", spec: { type: NetworkType.VXLAN, cidr: "10.130.0.0/24" } }));
  const spec = create(VmSpecSchema, { nics: [{ id: "eth0", networkId: net.id }, { id: "eth1", networkId: net.id }, { id: "eth2", networkId: net.id }] });
  const nics = await NicPorts.plan({ ...deps, ensureDefaultGroup, random: () => 0 }, DEFAULT_PROJECT_ID, "vm", spec);
  const { tried } = await nics.attempt(spec, Date.now());
  assert.deepEqual(
    tried.map((t) => t.port.spec!.fixedIps[0]),
    ["10.130.0.2", "10.130.0.3", "10.130.0.4"],
  );
});
