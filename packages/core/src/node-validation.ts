import { isIP } from "node:net";
import type { RegisterNodeRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import type { NodeSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { FieldViolation } from "./errors.js";
import { validateLabels, Violations } from "./violations.js";

/** An RFC 1123 host name: what a node name (hostname) must be. */
export const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
const TAINT_KEY = /^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$/;
/** Hypervisor kinds a node may report. */
export const HYPERVISOR_TYPES = ["qemu", "cloud-hypervisor", "firecracker", "simulated"] as const;

/** Validates a RegisterNodeRequest; returns every violation. */
export function validateRegisterNode(req: RegisterNodeRequest): FieldViolation[] {
  const v = new Violations();
  if (v.required("hostname", req.hostname !== "")) {
    v.pattern("hostname", req.hostname, HOSTNAME, "must be an RFC 1123 host name (letters, digits, '-' and '.', at most 253 characters)");
  }
  if (v.required("management_ip", req.managementIp !== "")) {
    if (isIP(req.managementIp) === 0) v.add("management_ip", "INVALID_FORMAT", "must be an IPv4 or IPv6 address");
  }
  validateLabels(v, "labels", req.labels);
  if (req.agentEndpoint !== "") checkEndpoint(v, "agent_endpoint", req.agentEndpoint);
  if (v.required("cpu_info", req.cpuInfo !== undefined) && req.cpuInfo) {
    v.range("cpu_info.logical_cpus", req.cpuInfo.logicalCpus, 1, 65_536);
    if (req.cpuInfo.model.length > 255) v.add("cpu_info.model", "INVALID_LENGTH", "must be at most 255 characters long");
  }
  if (v.required("memory_info", req.memoryInfo !== undefined) && req.memoryInfo) {
    v.range("memory_info.total_mib", req.memoryInfo.totalMib, 1, 1 << 30, "MiB");
  }
  if (req.storageDevices.length > 256) v.add("storage_devices", "TOO_MANY", "at most 256 devices");
  if (req.networkDevices.length > 256) v.add("network_devices", "TOO_MANY", "at most 256 devices");
  if (req.hypervisor && !(HYPERVISOR_TYPES as readonly string[]).includes(req.hypervisor.type)) {
    v.add("hypervisor.type", "INVALID_ENUM", `must be one of ${HYPERVISOR_TYPES.join(", ")}`);
  }
  return v.list;
}

/** Validates the user-writable parts of a node spec (taints, overcommit, reserved). */
export function validateNodeSettings(spec: NodeSpec, prefix = "spec"): FieldViolation[] {
  const v = new Violations();
  if (spec.taints.length > 64) v.add(`${prefix}.taints`, "TOO_MANY", "at most 64 taints");
  spec.taints.forEach((t, i) => {
    const f = `${prefix}.taints[${i}]`;
    if (v.required(`${f}.key`, t.key !== "")) v.pattern(`${f}.key`, t.key, TAINT_KEY, "must be 1-63 letters, digits, '.', '_', '-' or '/'");
    if (t.value.length > 63) v.add(`${f}.value`, "INVALID_LENGTH", "must be at most 63 characters long");
    if (![TaintEffect.NO_SCHEDULE, TaintEffect.PREFER_NO_SCHEDULE, TaintEffect.NO_EXECUTE].includes(t.effect)) {
      v.add(`${f}.effect`, "INVALID_ENUM", "must be NO_SCHEDULE, PREFER_NO_SCHEDULE or NO_EXECUTE");
    }
  });
  const oc = spec.overcommit;
  if (oc) {
    if (oc.cpuRatio !== 0 && !(oc.cpuRatio >= 1 && oc.cpuRatio <= 32)) v.add(`${prefix}.overcommit.cpu_ratio`, "OUT_OF_RANGE", "must be 0 or between 1 and 32");
    if (oc.memoryRatio !== 0 && !(oc.memoryRatio >= 1 && oc.memoryRatio <= 4)) v.add(`${prefix}.overcommit.memory_ratio`, "OUT_OF_RANGE", "must be 0 or between 1 and 4");
  }
  if (spec.reserved) {
    v.range(`${prefix}.reserved.cpu_cores`, spec.reserved.cpuCores, 0, 65_536);
  }
  return v.list;
}

function checkEndpoint(v: Violations, field: string, value: string): void {
  try {
    const url = new URL(value);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("scheme");
  } catch {
    v.add(field, "INVALID_FORMAT", "must be an http:// or https:// URL");
  }
}
