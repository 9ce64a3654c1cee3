import { clone } from "@bufbuild/protobuf";
import { NetworkInterfaceSchema, VmConfigSchema, type NetworkInterface, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { invalidArgument, QuantixError, type FieldViolation } from "@quantix/core";

/** A port's TAP and MAC on this host, from NetworkService (NetworkHost.portTap); undefined when unknown. */
export type PortTapLookup = (portId: string) => { readonly tap: string; readonly mac: string } | undefined;

/**
 * Fills in the TAP of every NIC that names a port (NetworkInterface.port_id), so every
 * backend opens the TAP NetworkService created, up on its network's bridge. The port must
 * be declared on this host (FAILED_PRECONDITION otherwise: apply its network first), its
 * MAC must be the NIC's and a tap_device given beside it must be the port's
 * (INVALID_ARGUMENT). Configs without port NICs come back unchanged.
 */
export function resolvePortNics(config: VmConfig, lookup: PortTapLookup | undefined, prefix = "config"): VmConfig {
  if (!config.network.some((n) => n.portId !== "")) return config;
  const out = clone(VmConfigSchema, config);
  const violations: FieldViolation[] = [];
  const missing: string[] = [];
  out.network.forEach((n, i) => resolveOne(n, lookup, `${prefix}.network[${i}]`, violations, missing));
  throwUnresolved(violations, missing, lookup);
  return out;
}

/** One NIC (AttachNic's `nic`), as resolvePortNics resolves those of a config; fields named from `field`. */
export function resolvePortNic(nic: NetworkInterface, lookup: PortTapLookup | undefined, field = "nic"): NetworkInterface {
  if (nic.portId === "") return nic;
  const out = clone(NetworkInterfaceSchema, nic);
  const violations: FieldViolation[] = [];
  const missing: string[] = [];
  resolveOne(out, lookup, field, violations, missing);
  throwUnresolved(violations, missing, lookup);
  return out;
}

function resolveOne(n: NetworkInterface, lookup: PortTapLookup | undefined, f: string, violations: FieldViolation[], missing: string[]): void {
  if (n.portId === "") return;
  const port = lookup?.(n.portId);
  if (!port) {
    missing.push(n.portId);
    return;
  }
  if (n.tapDevice !== "" && n.tapDevice !== port.tap) violations.push({ field: `${f}.tap_device`, reason: "INVALID_VALUE", description: `must be empty or the port's TAP ${port.tap}` });
  if (n.macAddress.toLowerCase() !== port.mac) violations.push({ field: `${f}.mac_address`, reason: "INVALID_VALUE", description: `must be the port's MAC ${port.mac}` });
  n.tapDevice = port.tap;
}

function throwUnresolved(violations: FieldViolation[], missing: string[], lookup: PortTapLookup | undefined): void {
  if (violations.length > 0) throw invalidArgument(violations);
  if (missing.length > 0) {
    const why = lookup ? "is not declared on this host (ApplyNetwork with the port first)" : "cannot be used: this agent does not manage networking (VMCP_NETWORK=on)";
    throw new QuantixError("failed_precondition", `port '${missing[0]}' ${why}`);
  }
}
