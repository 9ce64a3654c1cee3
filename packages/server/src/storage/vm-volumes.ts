import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VolumeState, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { claimVolume, guestDeviceHint, NODE_KIND, notFound, QuantixError, STORAGE_POOL_KIND, VOLUME_KIND, volumeNodeIds, type Resource, type Store, type TxOp, type VolumeReach } from "@quantix/core";
import type { NodeStorages } from "./node-storages.js";
import { NotReadyYet } from "../controllers/not-ready.js";
import { nodePoolType } from "../controllers/storage-pool-controller.js";

/**
 * The I/O half of a VM's volume disks (the rules are pure, in core's volume-attachments.ts):
 * reading the volumes a spec names, the commit ops that claim them for the VM, and
 * resolving their files on the VM's node for the agent's VmConfig.
 */

type V = Volume & Resource;

/** The volumes `spec` names (by id) with where each is reachable. NOT_FOUND naming a volume that is missing or in another project. */
export async function readVolumeDisks(store: Store, projectId: string, spec: VmSpec): Promise<{ volumes: Map<string, V>; reaches: VolumeReach[] }> {
  const volumes = new Map<string, V>();
  const reaches: VolumeReach[] = [];
  for (const [i, d] of spec.disks.entries()) {
    if (d.volumeId === "") continue;
    const v = volumes.get(d.volumeId) ?? (await store.of(VOLUME_KIND).get(d.volumeId));
    // A volume of another project is not told apart from a missing one.
    if (!v || v.projectId !== projectId) throw new QuantixError("not_found", `spec.disks[${i}].volume_id: volume '${d.volumeId}' not found in the VM's project`);
    volumes.set(v.id, v);
    const pool = await store.of(STORAGE_POOL_KIND).get(v.spec?.poolId ?? "");
    reaches.push({ field: `spec.disks[${i}].volume_id`, volumeId: v.id, nodeIds: volumeNodeIds(v, pool) });
  }
  return { volumes, reaches };
}

/**
 * The commit ops that claim every volume disk of `spec` for VM `vmId` (run under the
 * commit's lock: a volume another VM claimed meanwhile refuses the whole commit with
 * FAILED_PRECONDITION naming that VM).
 */
export function claimOps(vmId: string, spec: VmSpec, nodeId: string, nowMs: number): TxOp[] {
  return spec.disks
    .filter((d) => d.volumeId !== "")
    .map((d) => ({
      op: "update" as const,
      kind: VOLUME_KIND as never,
      object: { id: d.volumeId, resourceVersion: 0n } as Resource,
      mutate: (cur: Resource) => claimVolume(cur as V, { vmId, disk: d, nodeId, nowMs, guestDeviceHint: guestDeviceHint(spec.disks, d.id) }) as Resource | undefined,
    }));
}

/**
 * The files of the volumes `spec` names, on node `nodeId`, for toAgentVmConfig: asked of
 * the node's storage (its own paths, derived from ids). FAILED_PRECONDITION naming a
 * volume whose file the node does not have, or that is ERROR; NotReadyYet for one
 * still being made.
 */
export async function resolveVolumePaths(store: Store, storages: NodeStorages, nodeId: string, spec: VmSpec): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const disks = spec.disks.filter((d) => d.volumeId !== "");
  if (disks.length === 0) return out;
  const node = await store.of(NODE_KIND).get(nodeId);
  if (!node) throw notFound("node", nodeId);
  for (const d of disks) {
    const v = await store.of(VOLUME_KIND).get(d.volumeId);
    if (!v) throw new QuantixError("failed_precondition", `disk '${d.id}': volume '${d.volumeId}' no longer exists`);
    const state = v.status?.state ?? VolumeState.UNSPECIFIED;
    // A volume still being made (a VM's own new disk, its image being copied to the node): the VM waits for it.
    if (state === VolumeState.PENDING || state === VolumeState.CREATING || state === VolumeState.UNSPECIFIED) {
      const why = v.status?.conditions.find((c) => c.type === "Ready" && c.status !== ConditionStatus.TRUE)?.message;
      throw new NotReadyYet(`disk '${d.id}': volume '${v.id}' is being made (${VolumeState[state]}${why ? `: ${why}` : ""}); the VM starts once it is AVAILABLE`);
    }
    if (state === VolumeState.ERROR) throw new QuantixError("failed_precondition", `disk '${d.id}': volume '${v.id}' is ERROR${v.status?.errorMessage ? `: ${v.status.errorMessage}` : ""}`);
    const pool = await store.of(STORAGE_POOL_KIND).get(v.spec?.poolId ?? "");
    if (!pool) throw new QuantixError("failed_precondition", `disk '${d.id}': the pool of volume '${v.id}' no longer exists`);
    // Level-based: the pool is made to exist on the node first (idempotent; after a restart
    // the node's storage may not have been told of it yet).
    const storage = storages.of(node);
    await storage.ensurePool({ poolId: pool.id, ...nodePoolType(pool) });
    const info = await storage.volumeInfo({ poolId: pool.id, volumeId: v.id });
    if (!info) throw new QuantixError("failed_precondition", `disk '${d.id}': volume '${v.id}' has no file on node '${node.id}'`);
    out.set(v.id, info.path);
  }
  return out;
}
