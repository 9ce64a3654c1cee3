import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { FieldViolation } from "../errors.js";
import type { IdFormat } from "./id-format.js";

/** What every stored object has: an id and the revision of its last change. */
export interface Resource {
  id: string;
  resourceVersion: bigint;
}

/** The SQL type of an indexed column. */
export type ColumnType = "text" | "int" | "bigint" | "bool";

/** A scalar a column holds, a filter compares and a page cursor carries. */
export type FieldValue = string | number | boolean;

/**
 * A field of a kind that the stores keep in its own column: lists may filter on it
 * ("eq": one value; "in": any of several) and, if `order`, order by it. Its value comes
 * from the object (`value`), so the column can never disagree with the object.
 */
export interface FieldDecl<T> {
  /** The column's name: a constant, never input. */
  readonly column: string;
  readonly type: ColumnType;
  readonly value: (o: T) => FieldValue;
  readonly filter?: "eq" | "in";
  readonly order?: boolean;
}

/** A part of an object that only some writers may change (STYLE rule 2: one owner per status field). */
export interface OwnedField<T> {
  /** The field's path, for messages: `status.node_id`. */
  readonly path: string;
  readonly value: (o: T) => unknown;
  /** The actors (WriteOptions.actor) allowed to change it. */
  readonly owners: readonly string[];
}

/** Objects of a kind whose deletion waits for finalizers carry these two fields. */
export interface Finalizable {
  finalizers: string[];
  deletionRequestedAt?: Timestamp | undefined;
}

/**
 * One declaration per kind of resource: everything the stores, the resource service and
 * the controllers need to know about it. The memory, embedded and PostgreSQL stores
 * derive filters, ordering, page cursors, indexes and uniqueness from it; adding a kind
 * is its proto, this declaration, a migration and its registration (docs/adr/0008-*.md).
 */
export interface Kind<T extends Resource = Resource> {
  /** The name users read in messages: "VM", "node". */
  readonly name: string;
  readonly schema: DescMessage;
  /** The SQL table (a constant). */
  readonly table: string;
  /** Filterable and orderable fields by their API name (`project_id`, `created_at`). */
  readonly fields: Readonly<Record<string, FieldDecl<T>>>;
  /** Order fields, the default first. */
  readonly orderBy: readonly string[];
  /** The object's labels, when the kind has any (filtered with "all must match"). */
  readonly labels?: (o: T) => Readonly<Record<string, string>>;
  /** The natural key that must be unique across the kind, and how to say it is taken. */
  readonly unique?: { readonly key: (o: T) => string; readonly describe: (o: T) => string };
  /** Whether objects belong to a project (a `project_id` field). */
  readonly projectScoped: boolean;
  /** Finalizers every new object starts with; present only for kinds with `finalizers` and `deletion_requested_at` fields. */
  readonly finalizers?: readonly string[];
  /**
   * Which of an object's finalizers still have work to do when its deletion is asked for
   * (default: all). A delete of an object whose finalizers have nothing to do deletes it at
   * once, in the same write, rather than marking it for a cleanup that would find nothing.
   */
  readonly pendingFinalizers?: (o: T) => readonly string[];
  /** Parts of status with a single writer. */
  readonly owned?: readonly OwnedField<T>[];
  /** The format of the kind's ids (default RESOURCE_ID_FORMAT): requests are checked against it before they reach a store. */
  readonly idFormat?: IdFormat;
  /** Checks an object as a user would write it (create and update); the service adds its own rules. */
  readonly validate?: (o: T) => FieldViolation[];
  /** What reads (Get, List, Watch) return of an object: a copy with its write-only fields (secrets) emptied. */
  readonly redact?: (o: Resource) => Resource;
}

/** A Kind's object type. */
export type KindObject<K> = K extends Kind<infer T> ? T : never;

/** Declares a kind of the messages of `schema`, checking that its declaration is consistent (a programming error throws at import). */
export function defineKind<S extends DescMessage>(schema: S, decl: Omit<Kind<MessageShape<S> & Resource>, "schema">): Kind<MessageShape<S> & Resource> {
  for (const f of decl.orderBy) {
    if (!decl.fields[f]?.order) throw new Error(`kind ${decl.name}: order field ${f} is not declared with order: true`);
  }
  const columns = new Set<string>();
  for (const [name, f] of Object.entries(decl.fields)) {
    if (!/^[a-z][a-z0-9_]*$/.test(f.column) || columns.has(f.column)) throw new Error(`kind ${decl.name}: bad or repeated column for field ${name}`);
    columns.add(f.column);
  }
  if (decl.finalizers && !schema.fields.some((f) => f.name === "finalizers")) throw new Error(`kind ${decl.name}: finalizers declared but the message has no finalizers field`);
  return { ...decl, schema };
}

/** Milliseconds of a timestamp (0 when unset), as time fields store it. */
export function timeValue(ts: Timestamp | undefined): number {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0;
}

/** A text field. */
export function textField<T>(value: (o: T) => string, o: { column: string; filter?: "eq" | "in"; order?: boolean }): FieldDecl<T> {
  return { type: "text", value, ...o };
}

/** A 32-bit integer field (enums). */
export function intField<T>(value: (o: T) => number, o: { column: string; filter?: "eq" | "in"; order?: boolean }): FieldDecl<T> {
  return { type: "int", value, ...o };
}

/** A boolean field. */
export function boolField<T>(value: (o: T) => boolean, o: { column: string; filter?: "eq" }): FieldDecl<T> {
  return { type: "bool", value, ...o };
}

/** A time field, stored as milliseconds since the epoch. */
export function timeField<T>(value: (o: T) => Timestamp | undefined, o: { column: string; order?: boolean }): FieldDecl<T> {
  return { type: "bigint", value: (x) => timeValue(value(x)), ...o };
}
