import { VpnServiceSchema, type VpnService } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { clone } from "@bufbuild/protobuf";
import { defineKind, intField, textField, timeField, type Resource } from "../resource/kind.js";

/**
 * A VPN service as reads return it: the write-only secrets (the WireGuard private key,
 * the peers' pre-shared keys) emptied. The stored object keeps them for the router.
 */
export function withoutVpnSecrets<T extends VpnService>(v: T): T {
  const out = clone(VpnServiceSchema, v) as T;
  const spec = out.spec;
  if (!spec) return out;
  if (spec.protocolConfig.case === "wireguard") spec.protocolConfig.value.privateKey = "";
  for (const p of spec.peers) p.presharedKey = "";
  return out;
}

/** VPN services (Quantixkvm.network.v1.VpnService): WireGuard or IPsec tunnels on a network's central router, in a project. */
export const VPN_SERVICE_KIND = defineKind(VpnServiceSchema, {
  name: "VPN service",
  table: "quantix_vpn_services",
  fields: {
    project_id: textField((v) => v.projectId, { column: "project_id", filter: "eq" }),
    name: textField((v) => v.name, { column: "name", filter: "eq", order: true }),
    network_id: textField((v) => v.spec?.networkId ?? "", { column: "network_id", filter: "eq" }),
    type: intField((v) => v.spec?.type ?? 0, { column: "type", filter: "eq" }),
    state: intField((v) => v.status?.state ?? 0, { column: "state", filter: "in" }),
    created_at: timeField((v) => v.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (v) => v.labels,
  unique: { key: (v) => `${v.projectId}/${v.name}`, describe: (v) => `a VPN service named '${v.name}' already exists in project '${v.projectId}'` },
  projectScoped: true,
  redact: (v) => withoutVpnSecrets(v as VpnService & Resource),
});
