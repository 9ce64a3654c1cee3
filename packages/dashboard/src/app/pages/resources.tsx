import { useState, type ReactNode } from "react";
import { useQuery } from "@connectrpc/connect-query";
import { createClient } from "@connectrpc/connect";
import { toJson, type DescMessage, type DescMethodUnary, type JsonObject, type Message } from "@bufbuild/protobuf";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { errorText, transport } from "../client.js";
import { useLive } from "../live.js";
import { useWatch } from "../watch.js";

type Outcome = { ok: boolean; text: string } | undefined;

/**
 * One kind's list (the List* RPC's first repeated field), each row with its state and, on
 * demand, the whole object as JSON (enum names, as the API's JSON shows them).
 */
function ResourceList<I extends DescMessage, O extends DescMessage>({ title, method, remove, extra, live }: { title: string; method: DescMethodUnary<I, O>; remove?: (id: string) => Promise<unknown>; extra?: (j: JsonObject, act: (label: string, f: () => Promise<unknown>) => void) => ReactNode; live?: { items: ReadonlyMap<string, Message>; state: string; error: string | undefined } }) {
  // With `live` (a Watch* stream) the rows come from it and stay current; else one List* call.
  const q = useQuery(method, { pageSize: 200 } as never, { enabled: !live });
  const [outcome, setOutcome] = useState<Outcome>();
  const act = (label: string, f: () => Promise<unknown>) => {
    setOutcome({ ok: true, text: `${label}…` });
    f().then(
      () => setOutcome({ ok: true, text: `${label}: accepted` }),
      (err: unknown) => setOutcome({ ok: false, text: `${label} failed: ${errorText(err)}` }),
    ).finally(() => void (live ? undefined : q.refetch()));
  };
  const field = method.output.fields.find((f) => f.fieldKind === "list" && f.listKind === "message");
  const items: Message[] = live ? [...live.items.values()] : q.data && field ? ((q.data as unknown as Record<string, Message[]>)[field.localName] ?? []) : [];
  const loaded = live ? live.state === "live" || live.items.size > 0 : q.data !== undefined;
  const schema = field && field.fieldKind === "list" && field.listKind === "message" ? field.message : undefined;
  return (
    <section aria-labelledby={`h-${title}`}>
      <h2 id={`h-${title}`}>
        {title} {loaded && <span className="muted">({items.length})</span>}
      </h2>
      {q.error && <p className="error">{errorText(q.error)}</p>}
      {live?.error && <p className="muted">{live.state === "live" ? "" : "reconnecting: "}{live.error}</p>}
      {outcome && <p role="status" className={outcome.ok ? "ok" : "error"}>{outcome.text}</p>}
      {!loaded && <p className="muted">Loading…</p>}
      {loaded && items.length === 0 && <p className="muted">None.</p>}
      {items.length > 0 && schema && (
        <div className="scroll">
          <table>
            <thead>
              <tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Details</th>{(remove || extra) && <th scope="col">Actions</th>}</tr>
            </thead>
            <tbody>
              {items.map((it) => {
                const j = toJson(schema, it, { alwaysEmitImplicit: false }) as JsonObject;
                const status = (j["status"] ?? {}) as JsonObject;
                return (
                  <tr key={String(j["id"])}>
                    <td>{String(j["name"] ?? j["floatingIpAddress"] ?? j["id"])}</td>
                    <td>{String(status["state"] ?? status["phase"] ?? "")}{status["importProgressPercent"] !== undefined ? ` (import ${String(status["importProgressPercent"])}%)` : ""}</td>
                    <td>
                      <details>
                        <summary>{String(j["id"])}</summary>
                        <pre>{JSON.stringify(j, null, 2)}</pre>
                      </details>
                    </td>
                    {(remove || extra) && (
                      <td className="actions">
                        {extra?.(j, act)}
                        {remove && <button className="danger" onClick={() => { if (confirm(`Delete ${title.toLowerCase()} ${String(j["name"] ?? j["id"])}?`)) act(`Delete ${String(j["name"] ?? j["id"])}`, () => remove(String(j["id"]))); }}>Delete</button>}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

const pools = createClient(StoragePoolService, transport);
const volumes = createClient(VolumeService, transport);
const images = createClient(ImageService, transport);
const snapshots = createClient(SnapshotService, transport);
const networks = createClient(VirtualNetworkService, transport);
const ports = createClient(PortService, transport);
const groups = createClient(SecurityGroupService, transport);
const fips = createClient(FloatingIpService, transport);

/** Attach a volume to a VM (picked from the live list), or detach it from the VMs it is attached to. */
function VolumeAttach({ volume, act }: { volume: JsonObject; act: (label: string, f: () => Promise<unknown>) => void }) {
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

async function* mapStream<M, T>(stream: AsyncIterable<M>, f: (m: M) => { type: number; item: T | undefined; resourceVersion: bigint }) {
  for await (const m of stream) yield f(m);
}

export function StoragePage() {
  // Volumes (attachments) and images (import progress) change while you look: live from their watches.
  const liveVolumes = useWatch((rv, signal) => mapStream(volumes.watchVolumes({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.volume, resourceVersion: m.resourceVersion })), (v) => v.id);
  const liveImages = useWatch((rv, signal) => mapStream(images.watchImages({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.image, resourceVersion: m.resourceVersion })), (v) => v.id);
  return (
    <>
      <h1>Storage</h1>
      <ResourceList title="Pools" method={StoragePoolService.method.listStoragePools} remove={(id) => pools.deleteStoragePool({ id })} />
      <ResourceList title="Volumes" method={VolumeService.method.listVolumes} live={liveVolumes} remove={(id) => volumes.deleteVolume({ id })} extra={(j, act) => <VolumeAttach volume={j} act={act} />} />
      <ResourceList title="Images" method={ImageService.method.listImages} live={liveImages} remove={(id) => images.deleteImage({ id })} />
      <ResourceList title="Snapshots" method={SnapshotService.method.listSnapshots} remove={(id) => snapshots.deleteSnapshot({ id })} />
    </>
  );
}

export function NetworkPage() {
  return (
    <>
      <h1>Network</h1>
      <ResourceList title="Networks" method={VirtualNetworkService.method.listVirtualNetworks} remove={(id) => networks.deleteVirtualNetwork({ id })} />
      <ResourceList title="Ports" method={PortService.method.listPorts} remove={(id) => ports.deletePort({ id })} />
      <ResourceList title="Security groups" method={SecurityGroupService.method.listSecurityGroups} remove={(id) => groups.deleteSecurityGroup({ id })} />
      <ResourceList title="Floating IPs" method={FloatingIpService.method.listFloatingIps} remove={(id) => fips.deleteFloatingIp({ id })} />
    </>
  );
}
