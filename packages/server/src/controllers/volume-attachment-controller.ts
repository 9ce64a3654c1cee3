import type { Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { allOf, QuantixError, VM_KIND, VOLUME_ATTACHER, VOLUME_KIND, type Clock, type Resource, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";

type V = Volume & Resource;

/**
 * Releases volumes whose VM no longer uses them, level-based: an attachment whose VM is
 * gone (deleted: its guest was removed from its node before its last finalizer went), or
 * whose VM's spec.disks no longer names the volume, is dropped from the volume's
 * status.attachments. The claims themselves are made in the commits that change a VM's
 * disks (CreateVM, AttachVolume); this is the release half of a VM's deletion, and the
 * safety net for anything missed. The volume controller then shows AVAILABLE. It also
 * keeps each attachment's node_id on the node its VM is bound to, and deletes the volumes
 * CreateVM made for a VM (spec.owner_vm_id) once that VM is gone.
 */
export function volumeAttachmentController(deps: { store: Store; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const volumes = deps.store.of(VOLUME_KIND);
  const vms = deps.store.of(VM_KIND);
  return new Controller(
    {
      name: VOLUME_ATTACHER,
      watches: [
        watching(volumes, (e) => (e.type === "DELETED" || ((e.object.status?.attachments.length ?? 0) === 0 && ownedBy(e.object) === "") ? [] : [e.object.id])),
        // A VM that goes, or whose disks change, may release volumes it named.
        watching(vms, (e) => [...new Set([...(e.object.spec?.disks ?? []), ...(e.previous?.spec?.disks ?? [])].map((d) => d.volumeId).filter((id) => id !== ""))]),
      ],
      keys: async function* () {
        for await (const v of allOf(volumes)) if ((v.status?.attachments.length ?? 0) > 0 || ownedBy(v) !== "") yield v.id;
      },
      reconcile: async (id) => {
        const v = await volumes.get(id);
        if (!v) return;
        // A VM's own volume goes with its VM.
        if (ownedBy(v) !== "" && !v.deletionRequestedAt && !(await vms.get(ownedBy(v)))) {
          await volumes.delete(id, undefined, { actor: VOLUME_ATTACHER }).catch((err: unknown) => {
            if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
          });
          deps.log.log("info", "deleting a volume whose VM is gone", { volume_id: id, vm_id: ownedBy(v) });
          return;
        }
        if ((v.status?.attachments.length ?? 0) === 0) return;
        const stale: string[] = [];
        // Where each attached VM runs now (claims made at CreateVM precede its placement).
        const nodes = new Map<string, string>();
        for (const a of v.status!.attachments) {
          const vm = await vms.get(a.vmId);
          if (!vm || !vm.spec?.disks.some((d) => d.volumeId === id && d.id === a.diskId)) stale.push(keyOf(a));
          else if ((vm.status?.nodeId ?? "") !== a.nodeId) nodes.set(keyOf(a), vm.status?.nodeId ?? "");
        }
        if (stale.length === 0 && nodes.size === 0) return;
        try {
          await volumes.update(
            id,
            (cur: V) => {
              const before = cur.status?.attachments ?? [];
              // Only the attachments read as stale: one made since (a re-attach) stays.
              const keep = before.filter((a) => !stale.includes(keyOf(a)));
              let changed = keep.length !== before.length;
              for (const a of keep) {
                const node = nodes.get(keyOf(a));
                if (node !== undefined && node !== a.nodeId) {
                  a.nodeId = node;
                  changed = true;
                }
              }
              if (!changed) return undefined;
              cur.status!.attachments = keep;
              return cur;
            },
            { actor: VOLUME_ATTACHER },
          );
          if (stale.length > 0) deps.log.log("info", "released a volume its VM no longer uses", { volume_id: id, attachments: stale.join(",") });
        } catch (err) {
          if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
        }
      },
      resyncMs: deps.resyncMs ?? 60_000,
      concurrency: 2,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}

/** The VM a volume was made for (spec.owner_vm_id), or "". */
function ownedBy(v: Volume): string {
  return v.spec?.ownerVmId ?? "";
}

/** An attachment's identity: its VM, disk and the moment it was made. */
function keyOf(a: NonNullable<Volume["status"]>["attachments"][number]): string {
  return `${a.vmId}/${a.diskId}/${a.attachedAt?.seconds ?? 0n}.${a.attachedAt?.nanos ?? 0}`;
}
