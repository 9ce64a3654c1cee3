import { QuantixError } from "@quantix/core";
import { type Queryable, type SqlDriver } from "./sql-driver.js";

/**
 * The schema, as an append-only list of migrations: never edit one that has shipped; add
 * the next. Every store (embedded and PostgreSQL) runs the same list.
 *
 * Text columns that order pages use COLLATE "C" (byte order), so the database orders
 * names exactly as page cursors compare them, whatever the server's locale.
 */
export const MIGRATIONS: readonly { readonly version: number; readonly name: string; readonly sql: string }[] = [
  {
    version: 1,
    name: "revisions, vms, nodes and the change history",
    sql: `
      CREATE TABLE quantix_meta (
        id int PRIMARY KEY CHECK (id = 1),
        -- The latest revision. Every write increments it in its own transaction, which also
        -- locks this row until commit: revisions commit in order, so a reader that sees
        -- revision N sees every revision before it.
        revision bigint NOT NULL,
        -- Changes at or below this revision have been deleted from quantix_changes.
        compacted_revision bigint NOT NULL,
        demo_seeded boolean NOT NULL
      );
      INSERT INTO quantix_meta (id, revision, compacted_revision, demo_seeded) VALUES (1, 0, 0, false);

      CREATE TABLE quantix_vms (
        id text COLLATE "C" PRIMARY KEY,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        labels jsonb NOT NULL,
        state int NOT NULL,
        node_id text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_vms_project_name UNIQUE (project_id, name)
      );
      CREATE INDEX quantix_vms_by_name ON quantix_vms (name, id);
      CREATE INDEX quantix_vms_by_created ON quantix_vms (created_ms, id);
      CREATE INDEX quantix_vms_by_project_created ON quantix_vms (project_id, created_ms, id);
      CREATE INDEX quantix_vms_by_node ON quantix_vms (node_id, name, id);
      CREATE INDEX quantix_vms_labels ON quantix_vms USING gin (labels jsonb_path_ops);

      CREATE TABLE quantix_nodes (
        id text COLLATE "C" PRIMARY KEY,
        hostname text COLLATE "C" NOT NULL,
        labels jsonb NOT NULL,
        phase int NOT NULL,
        schedulable boolean NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_nodes_hostname UNIQUE (hostname)
      );
      CREATE INDEX quantix_nodes_by_created ON quantix_nodes (created_ms, id);
      CREATE INDEX quantix_nodes_labels ON quantix_nodes USING gin (labels jsonb_path_ops);

      -- One row per revision: what changed, the object after it (at this revision), and for
      -- MODIFIED the object before it (at previous_version).
      CREATE TABLE quantix_changes (
        revision bigint PRIMARY KEY,
        kind text NOT NULL,
        type text NOT NULL,
        data bytea NOT NULL,
        previous bytea,
        previous_version bigint
      );
    `,
  },
  {
    version: 2,
    name: "VMs of one project in name order, by index",
    // The unique (project_id, name) index cannot order ties by id for a keyset cursor, so the
    // planner walked the name index and filtered by project: slow for a small project.
    sql: `CREATE INDEX quantix_vms_by_project_name ON quantix_vms (project_id, name, id);`,
  },
  {
    version: 3,
    name: "a unique_key column for every kind; indexes the kind declarations imply",
    // Every kind's uniqueness is one text column (Kind.unique), so one store serves any
    // kind. Names, project ids and hostnames cannot contain '/'.
    sql: `
      ALTER TABLE quantix_vms ADD COLUMN unique_key text COLLATE "C";
      UPDATE quantix_vms SET unique_key = project_id || '/' || name;
      ALTER TABLE quantix_vms ADD CONSTRAINT quantix_vms_unique_key UNIQUE (unique_key);
      ALTER TABLE quantix_vms DROP CONSTRAINT quantix_vms_project_name;
      CREATE INDEX quantix_vms_by_name_created_ms ON quantix_vms (name, created_ms, id);
      CREATE INDEX quantix_vms_by_node_id_created_ms ON quantix_vms (node_id, created_ms, id);

      ALTER TABLE quantix_nodes ADD COLUMN unique_key text COLLATE "C";
      UPDATE quantix_nodes SET unique_key = hostname;
      ALTER TABLE quantix_nodes ADD CONSTRAINT quantix_nodes_unique_key UNIQUE (unique_key);
      ALTER TABLE quantix_nodes DROP CONSTRAINT quantix_nodes_hostname;
      CREATE INDEX quantix_nodes_by_hostname ON quantix_nodes (hostname, id);
      CREATE INDEX quantix_nodes_by_hostname_created_ms ON quantix_nodes (hostname, created_ms, id);
    `,
  },
  {
    version: 4,
    name: "events and migrations",
    // Written by kindTableDdl(EVENT_KIND) and kindTableDdl(MIGRATION_KIND) (npm run schema).
    sql: `
      CREATE TABLE quantix_events (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        project_id text COLLATE "C" NOT NULL,
        object_kind text COLLATE "C" NOT NULL,
        object_id text COLLATE "C" NOT NULL,
        type text COLLATE "C" NOT NULL,
        node_id text COLLATE "C" NOT NULL,
        time_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_events_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_events_by_time_ms ON quantix_events (time_ms, id);
      CREATE INDEX quantix_events_by_project_id_time_ms ON quantix_events (project_id, time_ms, id);
      CREATE INDEX quantix_events_by_object_kind_time_ms ON quantix_events (object_kind, time_ms, id);
      CREATE INDEX quantix_events_by_object_id_time_ms ON quantix_events (object_id, time_ms, id);
      CREATE INDEX quantix_events_by_node_id_time_ms ON quantix_events (node_id, time_ms, id);

      CREATE TABLE quantix_migrations (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        project_id text COLLATE "C" NOT NULL,
        vm_id text COLLATE "C" NOT NULL,
        phase int NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_migrations_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_migrations_by_created_ms ON quantix_migrations (created_ms, id);
      CREATE INDEX quantix_migrations_by_project_id_created_ms ON quantix_migrations (project_id, created_ms, id);
      CREATE INDEX quantix_migrations_by_vm_id_created_ms ON quantix_migrations (vm_id, created_ms, id);
    `,
  },
  {
    version: 5,
    name: "a cluster id",
    // Guests carry it (CLUSTER_METADATA_KEY): a database that is replaced has a new one, so
    // its control plane never mistakes the old cluster's guests for orphans of its own.
    sql: `ALTER TABLE quantix_meta ADD COLUMN cluster_id text NOT NULL DEFAULT gen_random_uuid()::text;`,
  },
  {
    version: 6,
    name: "node tombstones",
    // DecommissionNode leaves one, so that RegisterNode tells a decommissioned node's agent
    // apart from an agent whose node this database never knew.
    sql: `
      CREATE TABLE quantix_node_tombstones (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        hostname text COLLATE "C" NOT NULL,
        decommissioned_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_node_tombstones_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_node_tombstones_by_decommissioned_ms ON quantix_node_tombstones (decommissioned_ms, id);
      CREATE INDEX quantix_node_tombstones_by_hostname_decommissioned_ms ON quantix_node_tombstones (hostname, decommissioned_ms, id);
    `,
  },
  {
    version: 7,
    name: "identity: projects, users, service accounts, API tokens, role bindings, signing keys, credentials",
    // Issue 12. Secrets (password and token hashes, private keys) live only in
    // quantix_credentials, which no RPC serves.
    sql: `
      CREATE TABLE quantix_projects (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        name text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_projects_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_projects_by_name ON quantix_projects (name, id);
      CREATE INDEX quantix_projects_by_created_ms ON quantix_projects (created_ms, id);
      CREATE INDEX quantix_projects_by_name_created_ms ON quantix_projects (name, created_ms, id);
      CREATE INDEX quantix_projects_labels ON quantix_projects USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_users (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        username text COLLATE "C" NOT NULL,
        created_by text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_users_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_users_by_username ON quantix_users (username, id);
      CREATE INDEX quantix_users_by_created_ms ON quantix_users (created_ms, id);
      CREATE INDEX quantix_users_by_username_created_ms ON quantix_users (username, created_ms, id);
      CREATE INDEX quantix_users_by_created_by_username ON quantix_users (created_by, username, id);
      CREATE INDEX quantix_users_by_created_by_created_ms ON quantix_users (created_by, created_ms, id);
      CREATE TABLE quantix_service_accounts (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        name text COLLATE "C" NOT NULL,
        created_by text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_service_accounts_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_service_accounts_by_name ON quantix_service_accounts (name, id);
      CREATE INDEX quantix_service_accounts_by_created_ms ON quantix_service_accounts (created_ms, id);
      CREATE INDEX quantix_service_accounts_by_name_created_ms ON quantix_service_accounts (name, created_ms, id);
      CREATE INDEX quantix_service_accounts_by_created_by_name ON quantix_service_accounts (created_by, name, id);
      CREATE INDEX quantix_service_accounts_by_created_by_created_ms ON quantix_service_accounts (created_by, created_ms, id);
      CREATE TABLE quantix_api_tokens (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        owner_id text COLLATE "C" NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_api_tokens_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_api_tokens_by_created_ms ON quantix_api_tokens (created_ms, id);
      CREATE INDEX quantix_api_tokens_by_name ON quantix_api_tokens (name, id);
      CREATE INDEX quantix_api_tokens_by_owner_id_created_ms ON quantix_api_tokens (owner_id, created_ms, id);
      CREATE INDEX quantix_api_tokens_by_owner_id_name ON quantix_api_tokens (owner_id, name, id);
      CREATE INDEX quantix_api_tokens_by_project_id_created_ms ON quantix_api_tokens (project_id, created_ms, id);
      CREATE INDEX quantix_api_tokens_by_project_id_name ON quantix_api_tokens (project_id, name, id);
      CREATE TABLE quantix_role_bindings (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        project_id text COLLATE "C" NOT NULL,
        principal_id text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_role_bindings_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_role_bindings_by_created_ms ON quantix_role_bindings (created_ms, id);
      CREATE INDEX quantix_role_bindings_by_project_id_created_ms ON quantix_role_bindings (project_id, created_ms, id);
      CREATE INDEX quantix_role_bindings_by_principal_id_created_ms ON quantix_role_bindings (principal_id, created_ms, id);
      CREATE TABLE quantix_signing_keys (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        algorithm text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_signing_keys_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_signing_keys_by_created_ms ON quantix_signing_keys (created_ms, id);
      CREATE INDEX quantix_signing_keys_by_algorithm_created_ms ON quantix_signing_keys (algorithm, created_ms, id);
      CREATE TABLE quantix_credentials (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        owner_type text COLLATE "C" NOT NULL,
        updated_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_credentials_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_credentials_by_updated_ms ON quantix_credentials (updated_ms, id);
      CREATE INDEX quantix_credentials_by_owner_type_updated_ms ON quantix_credentials (owner_type, updated_ms, id);
    `,
  },
  {
    version: 8,
    name: "project quotas and the audit trail",
    // One quota per project (its id the project's), charged in the transactions that create,
    // resize and remove resources; one audit record per mutating call.
    sql: `
      CREATE TABLE quantix_quotas (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        project_id text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_quotas_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_quotas_by_created_ms ON quantix_quotas (created_ms, id);
      CREATE INDEX quantix_quotas_by_project_id_created_ms ON quantix_quotas (project_id, created_ms, id);
      CREATE TABLE quantix_audit_records (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        principal_id text COLLATE "C" NOT NULL,
        principal_kind text COLLATE "C" NOT NULL,
        procedure text COLLATE "C" NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        code text COLLATE "C" NOT NULL,
        time_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_audit_records_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_audit_records_by_time_ms ON quantix_audit_records (time_ms, id);
      CREATE INDEX quantix_audit_records_by_principal_id_time_ms ON quantix_audit_records (principal_id, time_ms, id);
      CREATE INDEX quantix_audit_records_by_principal_kind_time_ms ON quantix_audit_records (principal_kind, time_ms, id);
      CREATE INDEX quantix_audit_records_by_procedure_time_ms ON quantix_audit_records (procedure, time_ms, id);
      CREATE INDEX quantix_audit_records_by_project_id_time_ms ON quantix_audit_records (project_id, time_ms, id);
    `,
  },
  {
    version: 9,
    name: "join tokens (agent enrollment)",
    // CreateJoinToken stores one (the SHA-256 of its secret, never the secret); Enroll marks it used.
    sql: `
      CREATE TABLE quantix_join_tokens (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        node_name text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_join_tokens_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_join_tokens_by_created_ms ON quantix_join_tokens (created_ms, id);
      CREATE INDEX quantix_join_tokens_by_node_name_created_ms ON quantix_join_tokens (node_name, created_ms, id);
    `,
  },
  {
    version: 10,
    name: "storage pools, volumes, images and snapshots",
    // Pools are the cluster's (unique by name); volumes a project's (unique by name in it),
    // found by pool, by the volume they were cloned from and by the VM they are attached to;
    // images a project's; snapshots found by the volume or VM they were taken of.
    sql: `
      CREATE TABLE quantix_storage_pools (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        name text COLLATE "C" NOT NULL,
        type int NOT NULL,
        state int NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_storage_pools_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_storage_pools_by_name ON quantix_storage_pools (name, id);
      CREATE INDEX quantix_storage_pools_by_created_ms ON quantix_storage_pools (created_ms, id);
      CREATE INDEX quantix_storage_pools_by_name_created_ms ON quantix_storage_pools (name, created_ms, id);
      CREATE INDEX quantix_storage_pools_labels ON quantix_storage_pools USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_volumes (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        state int NOT NULL,
        volume_id text COLLATE "C" NOT NULL,
        pool_id text COLLATE "C" NOT NULL,
        source_volume_id text COLLATE "C" NOT NULL,
        vm_id text COLLATE "C" NOT NULL,
        bootable boolean NOT NULL,
        size_gib bigint NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_volumes_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_volumes_by_name ON quantix_volumes (name, id);
      CREATE INDEX quantix_volumes_by_created_ms ON quantix_volumes (created_ms, id);
      CREATE INDEX quantix_volumes_by_size_gib ON quantix_volumes (size_gib, id);
      CREATE INDEX quantix_volumes_by_project_id_name ON quantix_volumes (project_id, name, id);
      CREATE INDEX quantix_volumes_by_project_id_created_ms ON quantix_volumes (project_id, created_ms, id);
      CREATE INDEX quantix_volumes_by_project_id_size_gib ON quantix_volumes (project_id, size_gib, id);
      CREATE INDEX quantix_volumes_by_name_created_ms ON quantix_volumes (name, created_ms, id);
      CREATE INDEX quantix_volumes_by_name_size_gib ON quantix_volumes (name, size_gib, id);
      CREATE INDEX quantix_volumes_by_volume_id_name ON quantix_volumes (volume_id, name, id);
      CREATE INDEX quantix_volumes_by_volume_id_created_ms ON quantix_volumes (volume_id, created_ms, id);
      CREATE INDEX quantix_volumes_by_volume_id_size_gib ON quantix_volumes (volume_id, size_gib, id);
      CREATE INDEX quantix_volumes_by_pool_id_name ON quantix_volumes (pool_id, name, id);
      CREATE INDEX quantix_volumes_by_pool_id_created_ms ON quantix_volumes (pool_id, created_ms, id);
      CREATE INDEX quantix_volumes_by_pool_id_size_gib ON quantix_volumes (pool_id, size_gib, id);
      CREATE INDEX quantix_volumes_by_source_volume_id_name ON quantix_volumes (source_volume_id, name, id);
      CREATE INDEX quantix_volumes_by_source_volume_id_created_ms ON quantix_volumes (source_volume_id, created_ms, id);
      CREATE INDEX quantix_volumes_by_source_volume_id_size_gib ON quantix_volumes (source_volume_id, size_gib, id);
      CREATE INDEX quantix_volumes_by_vm_id_name ON quantix_volumes (vm_id, name, id);
      CREATE INDEX quantix_volumes_by_vm_id_created_ms ON quantix_volumes (vm_id, created_ms, id);
      CREATE INDEX quantix_volumes_by_vm_id_size_gib ON quantix_volumes (vm_id, size_gib, id);
      CREATE INDEX quantix_volumes_labels ON quantix_volumes USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_images (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        state int NOT NULL,
        pool_id text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_images_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_images_by_name ON quantix_images (name, id);
      CREATE INDEX quantix_images_by_created_ms ON quantix_images (created_ms, id);
      CREATE INDEX quantix_images_by_project_id_name ON quantix_images (project_id, name, id);
      CREATE INDEX quantix_images_by_project_id_created_ms ON quantix_images (project_id, created_ms, id);
      CREATE INDEX quantix_images_by_name_created_ms ON quantix_images (name, created_ms, id);
      CREATE INDEX quantix_images_by_pool_id_name ON quantix_images (pool_id, name, id);
      CREATE INDEX quantix_images_by_pool_id_created_ms ON quantix_images (pool_id, created_ms, id);
      CREATE INDEX quantix_images_labels ON quantix_images USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_snapshots (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        state int NOT NULL,
        volume_id text COLLATE "C" NOT NULL,
        vm_id text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_snapshots_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_snapshots_by_name ON quantix_snapshots (name, id);
      CREATE INDEX quantix_snapshots_by_created_ms ON quantix_snapshots (created_ms, id);
      CREATE INDEX quantix_snapshots_by_project_id_name ON quantix_snapshots (project_id, name, id);
      CREATE INDEX quantix_snapshots_by_project_id_created_ms ON quantix_snapshots (project_id, created_ms, id);
      CREATE INDEX quantix_snapshots_by_name_created_ms ON quantix_snapshots (name, created_ms, id);
      CREATE INDEX quantix_snapshots_by_volume_id_name ON quantix_snapshots (volume_id, name, id);
      CREATE INDEX quantix_snapshots_by_volume_id_created_ms ON quantix_snapshots (volume_id, created_ms, id);
      CREATE INDEX quantix_snapshots_by_vm_id_name ON quantix_snapshots (vm_id, name, id);
      CREATE INDEX quantix_snapshots_by_vm_id_created_ms ON quantix_snapshots (vm_id, created_ms, id);
      CREATE INDEX quantix_snapshots_labels ON quantix_snapshots USING gin (labels jsonb_path_ops);
    `,
  },
  {
    version: 11,
    name: "images found by id in a watch; volumes found by the image they were made from",
    // No image or volume from an image existed before (ImageService answered UNIMPLEMENTED,
    // CreateVolume refused image sources): image_id is filled from id, source_image_id is empty.
    sql: `
      ALTER TABLE quantix_images ADD COLUMN image_id text COLLATE "C" NOT NULL DEFAULT '';
      UPDATE quantix_images SET image_id = id;
      ALTER TABLE quantix_images ALTER COLUMN image_id DROP DEFAULT;
      CREATE INDEX quantix_images_by_image_id_name ON quantix_images (image_id, name, id);
      CREATE INDEX quantix_images_by_image_id_created_ms ON quantix_images (image_id, created_ms, id);
      ALTER TABLE quantix_volumes ADD COLUMN source_image_id text COLLATE "C" NOT NULL DEFAULT '';
      ALTER TABLE quantix_volumes ALTER COLUMN source_image_id DROP DEFAULT;
      CREATE INDEX quantix_volumes_by_source_image_id_name ON quantix_volumes (source_image_id, name, id);
      CREATE INDEX quantix_volumes_by_source_image_id_created_ms ON quantix_volumes (source_image_id, created_ms, id);
      CREATE INDEX quantix_volumes_by_source_image_id_size_gib ON quantix_volumes (source_image_id, size_gib, id);
    `,
  },
  {
    version: 12,
    name: "virtual networks, ports, security groups and their IPAM records",
    // Nothing of these existed before (the network services answered UNIMPLEMENTED).
    sql: `
      CREATE TABLE quantix_virtual_networks (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        type int NOT NULL,
        state int NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_virtual_networks_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_virtual_networks_by_name ON quantix_virtual_networks (name, id);
      CREATE INDEX quantix_virtual_networks_by_created_ms ON quantix_virtual_networks (created_ms, id);
      CREATE INDEX quantix_virtual_networks_by_project_id_name ON quantix_virtual_networks (project_id, name, id);
      CREATE INDEX quantix_virtual_networks_by_project_id_created_ms ON quantix_virtual_networks (project_id, created_ms, id);
      CREATE INDEX quantix_virtual_networks_by_name_created_ms ON quantix_virtual_networks (name, created_ms, id);
      CREATE INDEX quantix_virtual_networks_labels ON quantix_virtual_networks USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_ports (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        network_id text COLLATE "C" NOT NULL,
        device_id text COLLATE "C" NOT NULL,
        device_owner int NOT NULL,
        state int NOT NULL,
        mac_address text COLLATE "C" NOT NULL,
        ip_address text COLLATE "C" NOT NULL,
        node_id text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_ports_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_ports_by_created_ms ON quantix_ports (created_ms, id);
      CREATE INDEX quantix_ports_by_name ON quantix_ports (name, id);
      CREATE INDEX quantix_ports_by_project_id_created_ms ON quantix_ports (project_id, created_ms, id);
      CREATE INDEX quantix_ports_by_project_id_name ON quantix_ports (project_id, name, id);
      CREATE INDEX quantix_ports_by_name_created_ms ON quantix_ports (name, created_ms, id);
      CREATE INDEX quantix_ports_by_network_id_created_ms ON quantix_ports (network_id, created_ms, id);
      CREATE INDEX quantix_ports_by_network_id_name ON quantix_ports (network_id, name, id);
      CREATE INDEX quantix_ports_by_device_id_created_ms ON quantix_ports (device_id, created_ms, id);
      CREATE INDEX quantix_ports_by_device_id_name ON quantix_ports (device_id, name, id);
      CREATE INDEX quantix_ports_by_device_owner_created_ms ON quantix_ports (device_owner, created_ms, id);
      CREATE INDEX quantix_ports_by_device_owner_name ON quantix_ports (device_owner, name, id);
      CREATE INDEX quantix_ports_by_mac_address_created_ms ON quantix_ports (mac_address, created_ms, id);
      CREATE INDEX quantix_ports_by_mac_address_name ON quantix_ports (mac_address, name, id);
      CREATE INDEX quantix_ports_by_ip_address_created_ms ON quantix_ports (ip_address, created_ms, id);
      CREATE INDEX quantix_ports_by_ip_address_name ON quantix_ports (ip_address, name, id);
      CREATE INDEX quantix_ports_by_node_id_created_ms ON quantix_ports (node_id, created_ms, id);
      CREATE INDEX quantix_ports_by_node_id_name ON quantix_ports (node_id, name, id);
      CREATE INDEX quantix_ports_labels ON quantix_ports USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_security_groups (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_security_groups_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_security_groups_by_name ON quantix_security_groups (name, id);
      CREATE INDEX quantix_security_groups_by_created_ms ON quantix_security_groups (created_ms, id);
      CREATE INDEX quantix_security_groups_by_project_id_name ON quantix_security_groups (project_id, name, id);
      CREATE INDEX quantix_security_groups_by_project_id_created_ms ON quantix_security_groups (project_id, created_ms, id);
      CREATE INDEX quantix_security_groups_by_name_created_ms ON quantix_security_groups (name, created_ms, id);
      CREATE INDEX quantix_security_groups_labels ON quantix_security_groups USING gin (labels jsonb_path_ops);
      CREATE TABLE quantix_network_allocations (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        project_id text COLLATE "C" NOT NULL,
        network_id text COLLATE "C" NOT NULL,
        port_id text COLLATE "C" NOT NULL,
        vni int NOT NULL,
        requested boolean NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_network_allocations_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_network_allocations_by_created_ms ON quantix_network_allocations (created_ms, id);
      CREATE INDEX quantix_network_allocations_by_project_id_created_ms ON quantix_network_allocations (project_id, created_ms, id);
      CREATE INDEX quantix_network_allocations_by_network_id_created_ms ON quantix_network_allocations (network_id, created_ms, id);
      CREATE INDEX quantix_network_allocations_by_port_id_created_ms ON quantix_network_allocations (port_id, created_ms, id);
      CREATE INDEX quantix_network_allocations_by_vni_created_ms ON quantix_network_allocations (vni, created_ms, id);
    `,
  },
  {
    version: 13,
    name: "floating IPs",
    // Nothing of these existed before (FloatingIpService answered UNIMPLEMENTED).
    sql: `
      CREATE TABLE quantix_floating_ips (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        external_network_id text COLLATE "C" NOT NULL,
        port_id text COLLATE "C" NOT NULL,
        vm_id text COLLATE "C" NOT NULL,
        address text COLLATE "C" NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_floating_ips_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_floating_ips_by_created_ms ON quantix_floating_ips (created_ms, id);
      CREATE INDEX quantix_floating_ips_by_project_id_created_ms ON quantix_floating_ips (project_id, created_ms, id);
      CREATE INDEX quantix_floating_ips_by_external_network_id_created_ms ON quantix_floating_ips (external_network_id, created_ms, id);
      CREATE INDEX quantix_floating_ips_by_port_id_created_ms ON quantix_floating_ips (port_id, created_ms, id);
      CREATE INDEX quantix_floating_ips_by_vm_id_created_ms ON quantix_floating_ips (vm_id, created_ms, id);
      CREATE INDEX quantix_floating_ips_by_address_created_ms ON quantix_floating_ips (address, created_ms, id);
      CREATE INDEX quantix_floating_ips_labels ON quantix_floating_ips USING gin (labels jsonb_path_ops);
    `,
  },
  {
    version: 14,
    name: "VPN services",
    // Nothing of these existed before (VpnServiceManager answered UNIMPLEMENTED).
    sql: `
      CREATE TABLE quantix_vpn_services (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        network_id text COLLATE "C" NOT NULL,
        type int NOT NULL,
        state int NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_vpn_services_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_vpn_services_by_name ON quantix_vpn_services (name, id);
      CREATE INDEX quantix_vpn_services_by_created_ms ON quantix_vpn_services (created_ms, id);
      CREATE INDEX quantix_vpn_services_by_project_id_name ON quantix_vpn_services (project_id, name, id);
      CREATE INDEX quantix_vpn_services_by_project_id_created_ms ON quantix_vpn_services (project_id, created_ms, id);
      CREATE INDEX quantix_vpn_services_by_name_created_ms ON quantix_vpn_services (name, created_ms, id);
      CREATE INDEX quantix_vpn_services_by_network_id_name ON quantix_vpn_services (network_id, name, id);
      CREATE INDEX quantix_vpn_services_by_network_id_created_ms ON quantix_vpn_services (network_id, created_ms, id);
      CREATE INDEX quantix_vpn_services_by_type_name ON quantix_vpn_services (type, name, id);
      CREATE INDEX quantix_vpn_services_by_type_created_ms ON quantix_vpn_services (type, created_ms, id);
      CREATE INDEX quantix_vpn_services_labels ON quantix_vpn_services USING gin (labels jsonb_path_ops);
    `,
  },
  {
    version: 15,
    name: "load balancers",
    // Nothing of these existed before (LoadBalancerService answered UNIMPLEMENTED).
    sql: `
      CREATE TABLE quantix_load_balancers (
        id text COLLATE "C" PRIMARY KEY,
        unique_key text COLLATE "C",
        labels jsonb NOT NULL,
        project_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        vip_network_id text COLLATE "C" NOT NULL,
        vip_port_id text COLLATE "C" NOT NULL,
        state int NOT NULL,
        created_ms bigint NOT NULL,
        resource_version bigint NOT NULL,
        data bytea NOT NULL,
        CONSTRAINT quantix_load_balancers_unique_key UNIQUE (unique_key)
      );
      CREATE INDEX quantix_load_balancers_by_name ON quantix_load_balancers (name, id);
      CREATE INDEX quantix_load_balancers_by_created_ms ON quantix_load_balancers (created_ms, id);
      CREATE INDEX quantix_load_balancers_by_project_id_name ON quantix_load_balancers (project_id, name, id);
      CREATE INDEX quantix_load_balancers_by_project_id_created_ms ON quantix_load_balancers (project_id, created_ms, id);
      CREATE INDEX quantix_load_balancers_by_name_created_ms ON quantix_load_balancers (name, created_ms, id);
      CREATE INDEX quantix_load_balancers_by_vip_network_id_name ON quantix_load_balancers (vip_network_id, name, id);
      CREATE INDEX quantix_load_balancers_by_vip_network_id_created_ms ON quantix_load_balancers (vip_network_id, created_ms, id);
      CREATE INDEX quantix_load_balancers_by_vip_port_id_name ON quantix_load_balancers (vip_port_id, name, id);
      CREATE INDEX quantix_load_balancers_by_vip_port_id_created_ms ON quantix_load_balancers (vip_port_id, created_ms, id);
      CREATE INDEX quantix_load_balancers_labels ON quantix_load_balancers USING gin (labels jsonb_path_ops);
    `,
  },
  {
    version: 16,
    name: "MemoryGateway documents",
    // The MemoryGateway's own tables (packages/server/src/gateway/sql-doc-engine.ts): its
    // versions are a counter of their own, +1 per document change (gateway.proto).
    sql: `
      CREATE TABLE quantix_dom_meta (
        id int PRIMARY KEY CHECK (id = 1),
        -- The latest version. Every change increments it in its own transaction, which locks
        -- this row until commit: versions commit in order.
        version bigint NOT NULL,
        -- Changes at or below this version have been compacted away.
        compacted_version bigint NOT NULL
      );
      INSERT INTO quantix_dom_meta (id, version, compacted_version) VALUES (1, 0, 0);

      CREATE TABLE quantix_dom_nodes (
        node_id bytea PRIMARY KEY,
        version bigint NOT NULL,
        created_version bigint NOT NULL,
        created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL,
        clock jsonb NOT NULL,
        metadata jsonb NOT NULL,
        size_bytes bigint NOT NULL,
        since_checkpoint int NOT NULL,
        since_checkpoint_bytes bigint NOT NULL,
        -- The document in the row, or (over 256 KiB) in quantix_dom_blobs or the embedded
        -- store's files, by the SHA-256 of its bytes: one of the two is set.
        document bytea,
        document_ref text COLLATE "C"
      );
      CREATE INDEX quantix_dom_nodes_by_updated ON quantix_dom_nodes (updated_ms, node_id);
      CREATE INDEX quantix_dom_nodes_by_document_ref ON quantix_dom_nodes (document_ref) WHERE document_ref IS NOT NULL;

      CREATE TABLE quantix_dom_changes (
        version bigint PRIMARY KEY,
        node_id bytea NOT NULL,
        type text NOT NULL,
        created boolean NOT NULL,
        diff bytea,
        diff_ref text COLLATE "C",
        diff_size bigint NOT NULL,
        paths jsonb NOT NULL,
        clock jsonb NOT NULL,
        writer_clock jsonb NOT NULL,
        metadata jsonb NOT NULL,
        author text NOT NULL,
        writer_id text NOT NULL,
        committed_ms bigint NOT NULL,
        -- The whole document after the change, on some changes: reads at older versions
        -- start from the nearest one instead of the node's first change.
        checkpoint bytea,
        checkpoint_ref text COLLATE "C"
      );
      CREATE INDEX quantix_dom_changes_by_node ON quantix_dom_changes (node_id, version);
      CREATE INDEX quantix_dom_changes_by_diff_ref ON quantix_dom_changes (diff_ref) WHERE diff_ref IS NOT NULL;
      CREATE INDEX quantix_dom_changes_by_checkpoint_ref ON quantix_dom_changes (checkpoint_ref) WHERE checkpoint_ref IS NOT NULL;

      -- Documents and diffs over 256 KiB, in 1 MiB rows, by the SHA-256 of their bytes.
      CREATE TABLE quantix_dom_blobs (
        ref text COLLATE "C" NOT NULL,
        seq int NOT NULL,
        bytes bytea NOT NULL,
        PRIMARY KEY (ref, seq)
      );

      -- Who is in each collaborative session, on which replica (presence across replicas).
      CREATE TABLE quantix_dom_participants (
        node_id bytea NOT NULL,
        participant_id text NOT NULL,
        connection_id text NOT NULL,
        display_name text NOT NULL,
        metadata jsonb NOT NULL,
        cursor jsonb,
        joined_ms bigint NOT NULL,
        seen_ms bigint NOT NULL,
        PRIMARY KEY (node_id, participant_id)
      );
    `,
  },
];

/** The newest schema version this binary knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The advisory lock key that serialises migrations across processes ("quantix" in ASCII). */
const MIGRATION_LOCK = 0x7175616e746978n;

/**
 * Brings the database to SCHEMA_VERSION: each pending migration in its own transaction
 * with its version row, under an advisory lock so that replicas starting together take
 * turns (the second finds nothing to do). A database newer than this binary is refused
 * before anything is written. Returns the versions applied.
 */
export async function migrate(driver: SqlDriver, log: (msg: string) => void): Promise<number[]> {
  return driver.withAdvisoryLock(MIGRATION_LOCK, async (conn) => {
    await conn.query(`CREATE TABLE IF NOT EXISTS quantix_schema_migrations (
      version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const current = await schemaVersion(conn);
    if (current > SCHEMA_VERSION) {
      throw new QuantixError(
        "failed_precondition",
        `the database's schema is at version ${current}, newer than this Quantix binary understands (version ${SCHEMA_VERSION}): ` +
          `run a Quantix release at least as new as the one that last wrote this database, or point QUANTIX_STORE / QUANTIX_DATA_DIR elsewhere. Nothing was changed.`,
      );
    }
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (m.version <= current) continue;
      log(`applying schema migration ${m.version}: ${m.name}`);
      await driver.transaction(async (tx) => {
        await tx.exec(m.sql);
        await tx.query("INSERT INTO quantix_schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      });
      applied.push(m.version);
    }
    return applied;
  });
}

/** The highest applied migration, or 0 for an empty database. */
export async function schemaVersion(conn: Queryable): Promise<number> {
  const { rows } = await conn.query<{ v: number | null }>("SELECT max(version) AS v FROM quantix_schema_migrations");
  return rows[0]?.v ?? 0;
}
