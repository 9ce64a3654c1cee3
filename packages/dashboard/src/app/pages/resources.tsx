import { useQuery } from "@connectrpc/connect-query";
import { toJson, type DescMessage, type DescMethodUnary, type JsonObject, type Message } from "@bufbuild/protobuf";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { errorText } from "../client.js";

/**
 * One kind's list (the List* RPC's first repeated field), each row with its state and, on
 * demand, the whole object as JSON (enum names, as the API's JSON shows them).
 */
function ResourceList<I extends DescMessage, O extends DescMessage>({ title, method }: { title: string; method: DescMethodUnary<I, O> }) {
  const q = useQuery(method, { pageSize: 200 } as never);
  const field = method.output.fields.find((f) => f.fieldKind === "list" && f.listKind === "message");
  const items: Message[] = q.data && field ? ((q.data as unknown as Record<string, Message[]>)[field.localName] ?? []) : [];
  const schema = field && field.fieldKind === "list" && field.listKind === "message" ? field.message : undefined;
  return (
    <section aria-labelledby={`h-${title}`}>
      <h2 id={`h-${title}`}>
        {title} {q.data && <span className="muted">({items.length})</span>}
      </h2>
      {q.error && <p className="error">{errorText(q.error)}</p>}
      {q.isPending && <p className="muted">Loading…</p>}
      {q.data && items.length === 0 && <p className="muted">None.</p>}
      {items.length > 0 && schema && (
        <div className="scroll">
          <table>
            <thead>
              <tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Details</th></tr>
            </thead>
            <tbody>
              {items.map((it) => {
                const j = toJson(schema, it, { alwaysEmitImplicit: false }) as JsonObject;
                const status = (j["status"] ?? {}) as JsonObject;
                return (
                  <tr key={String(j["id"])}>
                    <td>{String(j["name"] ?? j["floatingIpAddress"] ?? j["id"])}</td>
                    <td>{String(status["state"] ?? status["phase"] ?? "")}{status["progressPercent"] !== undefined ? ` ${String(status["progressPercent"])}%` : ""}</td>
                    <td>
                      <details>
                        <summary>{String(j["id"])}</summary>
                        <pre>{JSON.stringify(j, null, 2)}</pre>
                      </details>
                    </td>
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

export function StoragePage() {
  return (
    <>
      <h1>Storage</h1>
      <ResourceList title="Pools" method={StoragePoolService.method.listStoragePools} />
      <ResourceList title="Volumes" method={VolumeService.method.listVolumes} />
      <ResourceList title="Images" method={ImageService.method.listImages} />
      <ResourceList title="Snapshots" method={SnapshotService.method.listSnapshots} />
    </>
  );
}

export function NetworkPage() {
  return (
    <>
      <h1>Network</h1>
      <ResourceList title="Networks" method={VirtualNetworkService.method.listVirtualNetworks} />
      <ResourceList title="Ports" method={PortService.method.listPorts} />
      <ResourceList title="Security groups" method={SecurityGroupService.method.listSecurityGroups} />
      <ResourceList title="Floating IPs" method={FloatingIpService.method.listFloatingIps} />
    </>
  );
}
