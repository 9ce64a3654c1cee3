import { useState } from "react";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { useQueryClient } from "@tanstack/react-query";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NetworkType, VirtualNetworkSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortSchema } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupRuleDirection, SecurityGroupRuleProtocol, SecurityGroupSchema } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { client, errorText } from "../client.js";
import { DESCRIPTION, enumOptions, NAME, ViolationForm } from "../form.js";
import { asJson, choices, nameOf, ResourceList, useList, type Act } from "./resources.js";

const networks = client(VirtualNetworkService);
const ports = client(PortService);
const groups = client(SecurityGroupService);
const fips = client(FloatingIpService);

const useNetworks = () => asJson(VirtualNetworkSchema, useList(VirtualNetworkService.method.listVirtualNetworks).items);
const usePorts = () => asJson(PortSchema, useList(PortService.method.listPorts).items);

function NetworkForm() {
  const qc = useQueryClient();
  return (
    <ViolationForm
      id="network"
      title="Create a network"
      submitLabel="Create network"
      fields={[
        NAME,
        { name: "type", label: "Type", field: "spec.type", json: "spec.type", type: "select", options: enumOptions(NetworkType, "NETWORK_TYPE_", "type…"), initial: "NETWORK_TYPE_ISOLATED" },
        { name: "cidr", label: "CIDR (10.0.0.0/24)", field: "spec.cidr", json: "spec.cidr" },
        { name: "gateway", label: "Gateway (optional)", field: "spec.gateway_ip", json: "spec.gatewayIp" },
        { name: "shared", label: "Usable from every project", field: "spec.shared", json: "spec.shared", type: "checkbox" },
        DESCRIPTION,
      ]}
      onSubmit={async (f) => {
        const n = await networks.createVirtualNetwork(fromJson(VirtualNetworkService.method.createVirtualNetwork.input, f.request() as JsonObject));
        await qc.invalidateQueries();
        return `Created network ${n.name}`;
      }}
    />
  );
}

function PortForm({ groupList }: { groupList: JsonObject[] }) {
  const qc = useQueryClient();
  const nets = useNetworks().filter((n) => (n["spec"] as JsonObject | undefined)?.["type"] !== "NETWORK_TYPE_EXTERNAL");
  return (
    <ViolationForm
      id="port"
      title="Create a port"
      submitLabel="Create port"
      fields={[
        NAME,
        { name: "network", label: "Network", field: "spec.network_id", json: "spec.networkId", type: "select", options: choices(nets, "network…") },
        { name: "ip", label: "Fixed IP (optional)", field: "spec.fixed_ips[0]", json: "spec.fixedIps[]" },
        { name: "group", label: "Security group", field: "spec.security_group_ids[0]", json: "spec.securityGroupIds[]", type: "select", options: choices(groupList, "the project's default") },
      ]}
      onSubmit={async (f) => {
        const p = await ports.createPort(fromJson(PortService.method.createPort.input, f.request() as JsonObject));
        await qc.invalidateQueries();
        return `Created port ${p.name || p.id}`;
      }}
    />
  );
}

function GroupForm() {
  const qc = useQueryClient();
  return (
    <ViolationForm
      id="group"
      title="Create a security group"
      submitLabel="Create security group"
      fields={[
        { name: "name", label: "Name", field: "name" },
        { name: "description", label: "Description", field: "description" },
        { name: "stateless", label: "Stateless (no connection tracking)", field: "stateless", type: "checkbox" },
      ]}
      onSubmit={async (f) => {
        const g = await groups.createSecurityGroup({ name: f.text("name"), description: f.text("description"), stateless: f.on("stateless") });
        await qc.invalidateQueries();
        return `Created security group ${g.name}`;
      }}
    />
  );
}

/** A violation of the rule's port text, in the server's words for the field, before any call. */
function portViolation(text: string): ConnectError {
  return new ConnectError(`port '${text}' must be a port (22) or a range (8000-8080)`, Code.InvalidArgument, undefined, [{ desc: BadRequestSchema, value: { fieldViolations: [{ field: "port_range_min", description: "must be a port (22) or a range (8000-8080)" }] } }]);
}

/** A security group's rules: each with Remove, and a form adding one (AddSecurityGroupRules). */
function RuleEditor({ groupList }: { groupList: JsonObject[] }) {
  const qc = useQueryClient();
  const [groupId, setGroupId] = useState("");
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string }>();
  const group = groupList.find((g) => g["id"] === groupId) ?? groupList[0];
  const rules = (group?.["rules"] ?? []) as JsonObject[];
  const short = (v: unknown, prefix: string) => String(v ?? "any").replace(prefix, "").toLowerCase();
  const remove = (ruleId: string) => {
    setOutcome(undefined);
    groups.removeSecurityGroupRules({ securityGroupId: String(group!["id"]), ruleIds: [ruleId] }).then(
      () => setOutcome({ ok: true, text: "Removed the rule" }),
      (err: unknown) => setOutcome({ ok: false, text: `Remove failed: ${errorText(err)}` }),
    ).finally(() => void qc.invalidateQueries());
  };
  return (
    <section aria-labelledby="rules-h">
      <h2 id="rules-h">Security group rules</h2>
      <label className="inline">
        Security group
        <select value={String(group?.["id"] ?? "")} onChange={(e) => setGroupId(e.target.value)}>
          {groupList.map((g) => <option key={String(g["id"])} value={String(g["id"])}>{nameOf(g)}</option>)}
        </select>
      </label>
      {outcome && <p role="status" className={outcome.ok ? "ok" : "error"}>{outcome.text}</p>}
      {group && (
        <div className="scroll">
          <table data-testid="rules">
            <thead>
              <tr><th scope="col">Direction</th><th scope="col">Protocol</th><th scope="col">Ports</th><th scope="col">Remote</th><th scope="col">Description</th><th scope="col">Actions</th></tr>
            </thead>
            <tbody>
              {rules.map((r) => (
                <tr key={String(r["id"])} data-rule={String(r["description"] ?? r["id"])}>
                  <td>{short(r["direction"], "SECURITY_GROUP_RULE_DIRECTION_")}</td>
                  <td>{short(r["protocol"], "SECURITY_GROUP_RULE_PROTOCOL_")}</td>
                  <td>{r["portRangeMin"] !== undefined ? (r["portRangeMin"] === r["portRangeMax"] ? String(r["portRangeMin"]) : `${String(r["portRangeMin"])}-${String(r["portRangeMax"])}`) : "any"}</td>
                  <td>{String(r["remoteCidr"] ?? r["remoteGroupId"] ?? "any")}</td>
                  <td>{String(r["description"] ?? "")}</td>
                  <td><button className="danger" onClick={() => remove(String(r["id"]))}>Remove<span className="sr-only"> rule {String(r["description"] ?? r["id"])}</span></button></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {group && (
        <details className="create">
          <summary>New rule</summary>
          <ViolationForm
            id="rule"
            title="Add a rule"
            submitLabel="Add rule"
            violationPrefix="rules[0]."
            fields={[
              { name: "direction", label: "Direction", field: "direction", json: "direction", type: "select", options: enumOptions(SecurityGroupRuleDirection, "SECURITY_GROUP_RULE_DIRECTION_"), initial: "SECURITY_GROUP_RULE_DIRECTION_INGRESS" },
              { name: "protocol", label: "Protocol", field: "protocol", json: "protocol", type: "select", options: enumOptions(SecurityGroupRuleProtocol, "SECURITY_GROUP_RULE_PROTOCOL_", "any") },
              { name: "port", label: "Port or range (22, 8000-8080)", field: "port_range_min", more: ["port_range_max"] },
              { name: "cidr", label: "Remote CIDR (optional)", field: "remote_cidr", json: "remoteCidr" },
              DESCRIPTION,
            ]}
            onSubmit={async (f) => {
              const rule = f.request();
              if (f.text("port")) {
                const m = /^(\d+)(?:-(\d+))?$/.exec(f.text("port"));
                if (!m) throw portViolation(f.text("port"));
                rule["portRangeMin"] = Number(m[1]);
                rule["portRangeMax"] = Number(m[2] ?? m[1]);
              }
              await groups.addSecurityGroupRules(fromJson(SecurityGroupService.method.addSecurityGroupRules.input, { securityGroupId: String(group["id"]), rules: [rule] } as JsonObject));
              await qc.invalidateQueries();
              return `Added the rule to ${nameOf(group)}`;
            }}
          />
        </details>
      )}
    </section>
  );
}

function FloatingIpForm() {
  const qc = useQueryClient();
  const external = useNetworks().filter((n) => (n["spec"] as JsonObject | undefined)?.["type"] === "NETWORK_TYPE_EXTERNAL");
  return (
    <ViolationForm
      id="fip"
      title="Allocate a floating IP"
      submitLabel="Allocate"
      fields={[
        { name: "network", label: "External network", field: "external_network_id", type: "select", options: choices(external, "external network…") },
        { name: "address", label: "Address (optional)", field: "address" },
        { name: "description", label: "Description", field: "description" },
      ]}
      onSubmit={async (f) => {
        const ip = await fips.createFloatingIp({ externalNetworkId: f.text("network"), address: f.text("address"), description: f.text("description") });
        await qc.invalidateQueries();
        return `Allocated ${ip.address}`;
      }}
    />
  );
}

/** Associate a floating IP with a port (picked from the list), or disassociate it. */
function FloatingIpAssociate({ fip, act, portList }: { fip: JsonObject; act: Act; portList: JsonObject[] }) {
  const [port, setPort] = useState("");
  const id = String(fip["id"]);
  const current = fip["portId"] ? portList.find((p) => p["id"] === fip["portId"]) : undefined;
  return (
    <>
      <label className="inline">
        <span className="sr-only">Port for {nameOf(fip)}</span>
        <select value={port} onChange={(e) => setPort(e.target.value)}>
          <option value="">port…</option>
          {portList.map((p) => <option key={String(p["id"])} value={String(p["id"])}>{nameOf(p)}</option>)}
        </select>
      </label>
      <button disabled={!port} onClick={() => act(`Associate ${nameOf(fip)}`, () => fips.associateFloatingIp({ id, portId: port, reassign: Boolean(fip["portId"]) }))}>Associate</button>
      {fip["portId"] !== undefined && (
        <>
          <span data-testid="fip-port">→ {current ? nameOf(current) : String(fip["portId"])}</span>
          <button onClick={() => act(`Disassociate ${nameOf(fip)}`, () => fips.disassociateFloatingIp({ id }))}>Disassociate</button>
        </>
      )}
    </>
  );
}

export function NetworkPage() {
  const groupList = asJson(SecurityGroupSchema, useList(SecurityGroupService.method.listSecurityGroups).items);
  const portList = usePorts();
  return (
    <>
      <h1>Network</h1>
      <ResourceList title="Networks" method={VirtualNetworkService.method.listVirtualNetworks} remove={(id) => networks.deleteVirtualNetwork({ id })} create={<NetworkForm />} />
      <ResourceList title="Ports" method={PortService.method.listPorts} remove={(id) => ports.deletePort({ id })} create={<PortForm groupList={groupList} />} />
      <ResourceList title="Security groups" method={SecurityGroupService.method.listSecurityGroups} remove={(id) => groups.deleteSecurityGroup({ id })} create={<GroupForm />} />
      <RuleEditor groupList={groupList} />
      <ResourceList title="Floating IPs" noun="floating IP" method={FloatingIpService.method.listFloatingIps} remove={(id) => fips.deleteFloatingIp({ id })} create={<FloatingIpForm />} extra={(j, act) => <FloatingIpAssociate fip={j} act={act} portList={portList} />} />
    </>
  );
}
