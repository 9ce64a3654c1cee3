import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { MigrationSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { NodeSchema, NodeTombstoneSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { EventSchema } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import { JoinTokenSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { EVENT_KIND, JOIN_TOKEN_KIND, MIGRATION_KIND, NODE_KIND, NODE_TOMBSTONE_KIND, VM_KIND, type FieldValue, type Kind, type Resource } from "@quantix/core";

/** Values of declared fields, by field name (as Query.where names them). */
export type Values = Readonly<Record<string, FieldValue>>;

/**
 * Builds valid objects of one kind with chosen field values, for the kind contract suite.
 * `scope(tag)` gives values (and a filter) that set a test's objects apart in a shared store.
 */
export interface KindFixture {
  readonly kind: Kind<Resource>;
  make(values: Values, labels?: Record<string, string>): Resource;
  scope(tag: string): { values: Values; labels?: Record<string, string>; where?: Values; labelFilter?: Record<string, string> };
  /** Values that give an object work for its finalizers (kinds with finalizers only). */
  readonly busy?: Values;
}

const ms = (v: FieldValue | undefined, dflt: number) => timestampFromMs(typeof v === "number" ? v : dflt);
const str = (v: FieldValue | undefined, dflt: string) => (typeof v === "string" ? v : dflt);
const int = (v: FieldValue | undefined, dflt: number) => (typeof v === "number" ? v : dflt);
const NOW = 1_700_000_000_000;

const vm: KindFixture = {
  kind: VM_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(VirtualMachineSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      name: str(v["name"], `vm-${randomUUID().slice(0, 8)}`),
      labels,
      spec: { cpu: { cores: 1 }, memory: { sizeMib: 512n } },
      status: { state: int(v["state"], 1), nodeId: str(v["node_id"], "") },
      createdAt: ms(v["created_at"], NOW),
      generation: 1n,
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
  busy: { node_id: "a-node" },
};

const node: KindFixture = {
  kind: NODE_KIND as unknown as Kind<Resource>,
  make: (v, labels = {}) =>
    create(NodeSchema, {
      id: randomUUID(),
      hostname: str(v["hostname"], `h-${randomUUID().slice(0, 8)}`),
      labels,
      spec: { schedulable: typeof v["schedulable"] === "boolean" ? v["schedulable"] : true },
      status: { phase: int(v["phase"], 2) },
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: {}, labels: { scope: tag }, labelFilter: { scope: tag } }),
};

const event: KindFixture = {
  kind: EVENT_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(EventSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      objectKind: str(v["object_kind"], "VM"),
      objectId: str(v["object_id"], randomUUID()),
      type: str(v["type"], "Started"),
      nodeId: str(v["node_id"], ""),
      message: "a test event",
      time: ms(v["time"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

const migration: KindFixture = {
  kind: MIGRATION_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(MigrationSchema, {
      id: randomUUID(),
      projectId: str(v["project_id"], randomUUID()),
      vmId: str(v["vm_id"], randomUUID()),
      status: { phase: int(v["phase"], 1) },
      createdAt: ms(v["created_at"], NOW),
    }),
  scope: (tag) => ({ values: { project_id: tag }, where: { project_id: tag } }),
};

/** A fixture for every kind the control plane has (ALL_KINDS): a new kind adds its own here. */
const nodeTombstone: KindFixture = {
  kind: NODE_TOMBSTONE_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(NodeTombstoneSchema, {
      id: randomUUID(),
      hostname: str(v["hostname"], `h-${randomUUID().slice(0, 8)}`),
      decommissionedAt: ms(v["decommissioned_at"], NOW),
    }),
  scope: (tag) => ({ values: { hostname: tag }, where: { hostname: tag } }),
};

const joinToken: KindFixture = {
  kind: JOIN_TOKEN_KIND as unknown as Kind<Resource>,
  make: (v) =>
    create(JoinTokenSchema, {
      id: randomUUID(),
      nodeName: str(v["node_name"], `h-${randomUUID().slice(0, 8)}`),
      nodeId: randomUUID(),
      createTime: ms(v["create_time"], NOW),
      secretSha256: new Uint8Array(32).fill(7),
    }),
  scope: (tag) => ({ values: { node_name: tag }, where: { node_name: tag } }),
};

export const KIND_FIXTURES: readonly KindFixture[] = [vm, node, event, migration, nodeTombstone, joinToken];
