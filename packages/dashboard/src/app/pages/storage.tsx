import { useState } from "react";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { useQueryClient } from "@tanstack/react-query";
import { StoragePoolSchema, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { ImageFormat, ImageSchema, ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { SnapshotSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { client } from "../client.js";
import { DESCRIPTION, enumOptions, NAME, setPath, ViolationForm } from "../form.js";
import { useLive } from "../live.js";
import { mapStream, useWatch } from "../watch.js";
import { asJson, choices, nameOf, ResourceList, useList, type Act, type LiveItems } from "./resources.js";

const pools = client(StoragePoolService);
const volumes = client(VolumeService);
const images = client(ImageService);
const snapshots = client(SnapshotService);


/** Attach a volume to a VM (picked from the live list), or detach it from the VMs it is attached to. */
function VolumeAttach({ volume, act }: { volume: JsonObject; act: Act }) {
  const live = useLive();
  const [vm, setVm] = useState("");
  const id = String(volume["id"]);
  const attached = (((volume["status"] as JsonObject | undefined)?.["attachments"] ?? []) as JsonObject[]).map((a) => String(a["vmId"] ?? ""));
  return (
    <>
      <label className="inline">
        <span className="sr-only">VM to attach {String(volume["name"])} to</span>
        <select value={vm} onChange={(e) => setVm(e.target.value)}>
          <option value="">VM…</option>
          {[...live.vms.values()].map((v) => <option key={v.id} value={v.id}>{v.name}</option>)}
        </select>
      </label>
      <button disabled={!vm} onClick={() => act("Attach", () => volumes.attachVolume({ id, vmId: vm }))}>Attach</button>
      {attached.filter(Boolean).map((v) => (
        <button key={v} onClick={() => act("Detach", () => volumes.detachVolume({ id, vmId: v }))}>Detach from {live.vms.get(v)?.name ?? v}</button>
      ))}
    </>
  );
}

function PoolForm() {
  const live = useLive();
  const qc = useQueryClient();
  const nodes: { value: string; label: string }[] = [{ value: "", label: "every node" }, ...[...live.nodes.values()].map((n) => ({ value: n.id, label: n.hostname }))];
  return (
    <ViolationForm
      id="pool"
      title="Create a storage pool"
      submitLabel="Create pool"
      fields={[
        NAME,
        { name: "type", label: "Type", field: "spec.type", json: "spec.type", type: "select", options: enumOptions(StoragePoolType, "STORAGE_POOL_TYPE_", "type…"), initial: "STORAGE_POOL_TYPE_LOCAL_DIR" },
        { name: "node", label: "Node (local pools)", field: "spec.node_ids", json: "spec.nodeIds[]", type: "select", options: nodes },
        { name: "default", label: "The default pool", field: "spec.is_default", json: "spec.isDefault", type: "checkbox" },
        DESCRIPTION,
      ]}
      onSubmit={async (f) => {
        // Always a spec: without one the server asks for the spec, not for its type.
        const p = await pools.createStoragePool(fromJson(StoragePoolService.method.createStoragePool.input, { spec: {}, ...f.request() } as JsonObject));
        await qc.invalidateQueries();
        return `Created pool ${p.name}`;
      }}
    />
  );
}

function VolumeForm({ images: imgs }: { images: JsonObject[] }) {
  const live = useLive();
  const qc = useQueryClient();
  const poolList = asJson(StoragePoolSchema, useList(StoragePoolService.method.listStoragePools).items);
  const snaps = asJson(SnapshotSchema, useList(SnapshotService.method.listSnapshots).items);
  const sources: { value: string; label: string }[] = [{ value: "", label: "empty" }, ...imgs.map((j) => ({ value: `imageId:${String(j["id"])}`, label: `image ${nameOf(j)}` })), ...snaps.map((j) => ({ value: `snapshotId:${String(j["id"])}`, label: `snapshot ${nameOf(j)}` }))];
  return (
    <ViolationForm
      id="volume"
      title="Create a volume"
      submitLabel="Create volume"
      fields={[
        NAME,
        { name: "size", label: "Size (GiB)", field: "spec.size_gib", json: "spec.sizeGib", type: "number", initial: "1" },
        { name: "pool", label: "Pool", field: "spec.pool_id", json: "spec.poolId", type: "select", options: choices(poolList, "the default pool") },
        { name: "source", label: "From", field: "spec.source", type: "select", options: sources },
        { name: "node", label: "Node (local pools)", field: "node_id", json: "nodeId", type: "select", options: [{ value: "", label: "the scheduler's choice" }, ...[...live.nodes.values()].map((n) => ({ value: n.id, label: n.hostname }))] },
        DESCRIPTION,
      ]}
      onSubmit={async (f) => {
        const req = f.request();
        const [kind, id] = f.text("source").split(":");
        if (kind && id) setPath(req, `spec.source.${kind}`, id);
        const v = await volumes.createVolume(fromJson(VolumeService.method.createVolume.input, req as JsonObject));
        await qc.invalidateQueries();
        return `Created volume ${v.name}`;
      }}
    />
  );
}

/** ImportImage: creates the image and follows its import (the list shows the percentage too). */
function ImageImportForm() {
  const poolList = asJson(StoragePoolSchema, useList(StoragePoolService.method.listStoragePools).items);
  const [progress, setProgress] = useState<string>();
  return (
    <ViolationForm
      id="import"
      title="Import an image from a URL"
      submitLabel="Import"
      violationPrefix="create."
      fields={[
        NAME,
        { name: "url", label: "URL", field: "spec.source.url", json: "spec.source.url", type: "url" },
        { name: "pool", label: "Pool", field: "spec.pool_id", json: "spec.poolId", type: "select", options: choices(poolList, "the default pool") },
        { name: "format", label: "Format", field: "spec.disk_format", json: "spec.diskFormat", type: "select", options: enumOptions(ImageFormat, "IMAGE_FORMAT_", "detect") },
        { name: "sha256", label: "Expected SHA-256 (optional)", field: "spec.source.expected_sha256", json: "spec.source.expectedSha256" },
      ]}
      onSubmit={async (f) => {
        const name = f.text("name");
        const it = images.importImage(fromJson(ImageService.method.importImage.input, { create: f.request() } as JsonObject))[Symbol.asyncIterator]();
        // The first message says it was created (or the call fails with the violations); the rest is progress.
        const first = await it.next();
        const show = (p: { progressPercent: number; state: ImageState; message: string }) => setProgress(`${name}: ${ImageState[p.state]} ${Math.round(p.progressPercent)}%${p.message ? ` (${p.message})` : ""}`);
        if (!first.done) show(first.value);
        void (async () => {
          try {
            for (let r = await it.next(); !r.done; r = await it.next()) show(r.value);
          } catch (err) {
            setProgress(`${name}: ${String((err as Error).message)}`);
          }
        })();
        return `Importing ${name}`;
      }}
    >
      {progress && <p role="status" data-testid="import-progress">{progress}</p>}
    </ViolationForm>
  );
}

/** UploadImage is client streaming: a browser's fetch over HTTP/1.1 cannot send it, so the page gives the CLI's command. */
function ImageUpload() {
  const [name, setName] = useState("");
  const [file, setFile] = useState("");
  const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return (
    <div className="card form" role="group" aria-labelledby="upload-h">
      <h3 id="upload-h">Upload an image from a file</h3>
      <p className="muted">
        Not available in the browser: UploadImage streams the file from the client, which a browser cannot do over Connect
        (fetch sends no streaming request body over HTTP/1.1), and the control plane has no plain HTTP upload. Upload with the CLI:
      </p>
      <label>Image name<input value={name} onChange={(e) => setName(e.target.value)} /></label>
      <label>Local file<input type="file" onChange={(e) => setFile(e.target.files?.[0]?.name ?? "")} /></label>
      <pre data-testid="upload-command">quantix image upload {quote(name || "NAME")} {quote(file || "FILE")}</pre>
    </div>
  );
}

function SnapshotForm({ volumes: vols }: { volumes: JsonObject[] }) {
  const qc = useQueryClient();
  return (
    <ViolationForm
      id="snapshot"
      title="Snapshot a volume"
      submitLabel="Create snapshot"
      fields={[
        NAME,
        { name: "volume", label: "Volume", field: "spec.volume_id", json: "spec.volumeId", type: "select", options: choices(vols, "volume…") },
        DESCRIPTION,
      ]}
      onSubmit={async (f) => {
        const s = await snapshots.createSnapshot(fromJson(SnapshotService.method.createSnapshot.input, f.request() as JsonObject));
        await qc.invalidateQueries();
        return `Created snapshot ${s.name}`;
      }}
    />
  );
}

export function StoragePage() {
  // Volumes (attachments) and images (import progress) change while you look: live from their watches.
  const liveVolumes = useWatch((rv, signal) => mapStream(volumes.watchVolumes({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.volume, resourceVersion: m.resourceVersion })), (v) => v.id);
  const liveImages = useWatch((rv, signal) => mapStream(images.watchImages({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.image, resourceVersion: m.resourceVersion })), (v) => v.id);
  const vols = asJson(VolumeSchema, liveVolumes.items.values());
  const imgs = asJson(ImageSchema, liveImages.items.values());
  return (
    <>
      <h1>Storage</h1>
      <ResourceList title="Pools" method={StoragePoolService.method.listStoragePools} remove={(id) => pools.deleteStoragePool({ id })} create={<PoolForm />} />
      <ResourceList title="Volumes" method={VolumeService.method.listVolumes} live={liveVolumes as LiveItems} remove={(id) => volumes.deleteVolume({ id })} extra={(j, act) => <VolumeAttach volume={j} act={act} />} create={<VolumeForm images={imgs} />} />
      <ResourceList
        title="Images"
        method={ImageService.method.listImages}
        live={liveImages as LiveItems}
        remove={(id) => images.deleteImage({ id })}
        create={
          <div className="side-by-side">
            <ImageImportForm />
            <ImageUpload />
          </div>
        }
      />
      <ResourceList title="Snapshots" method={SnapshotService.method.listSnapshots} remove={(id) => snapshots.deleteSnapshot({ id })} create={<SnapshotForm volumes={vols} />} />
    </>
  );
}
