import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { MigrationService } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_service_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { EventService } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";

/** One RPC the fuzzer aims at, with a base request (proto JSON) that a mutation spoils. */
export interface FuzzTarget {
  readonly method: DescMethod;
  readonly request: Record<string, unknown>;
  /** The request field (JSON name) an id mutation replaces, if it has one. */
  readonly idField?: string;
}

/** A VM id that exists nowhere: writes aimed at it cannot change anything. */
export const UNKNOWN_ID = "99999999-9999-9999-9999-999999999999";

const m = (service: DescService, name: string): DescMethod => service.methods.find((x) => x.name === name)!;

/**
 * The RPCs a fuzz run spoils. Every write among them aims at an unknown id, carries an
 * invalid name or hostname, or (UpdateVM of a real VM) changes no field, so that no
 * mutation can make a valid write: any change of state is a defect. Reads aim at the
 * seeded VMs (`vmIds`).
 */
export function fuzzTargets(vmIds: readonly string[]): FuzzTarget[] {
  const vm = vmIds[0] ?? UNKNOWN_ID;
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: "256" } };
  return [
    { method: m(VMService, "GetVM"), request: { id: vm }, idField: "id" },
    { method: m(VMService, "ListVMs"), request: { pageSize: 10 }, idField: "nodeId" },
    { method: m(VMService, "WatchVM"), request: { vmId: vm }, idField: "vmId" },
    { method: m(VMService, "WatchVMs"), request: {}, idField: "projectId" },
    { method: m(VMService, "CreateVM"), request: { name: "0-never-valid", spec }, idField: "nodeId" },
    { method: m(VMService, "UpdateVM"), request: { id: vm }, idField: "id" },
    { method: m(VMService, "DeleteVM"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(VMService, "StartVM"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(VMService, "StopVM"), request: { id: UNKNOWN_ID, force: true }, idField: "id" },
    { method: m(VMService, "MigrateVM"), request: { vmId: UNKNOWN_ID, live: true }, idField: "vmId" },
    { method: m(VMService, "GetConsoleOutput"), request: { vmId: vm }, idField: "vmId" },
    { method: m(NodeService, "GetNode"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(NodeService, "ListNodes"), request: {} },
    { method: m(NodeService, "RegisterNode"), request: { hostname: "-not-a-host-", agentEndpoint: "http://127.0.0.1:1" }, idField: "nodeId" },
    { method: m(NodeService, "UpdateHeartbeat"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(NodeService, "DrainNode"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(MigrationService, "GetMigration"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(MigrationService, "ListMigrations"), request: {}, idField: "vmId" },
    { method: m(MigrationService, "CancelMigration"), request: { id: UNKNOWN_ID }, idField: "id" },
    { method: m(EventService, "ListEvents"), request: { orderBy: "time desc" }, idField: "objectId" },
    { method: m(EventService, "WatchEvents"), request: {}, idField: "objectId" },
    { method: m(StoragePoolService, "ListStoragePools"), request: {} },
  ];
}
