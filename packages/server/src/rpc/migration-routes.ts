import { MigrationStatus_Phase as MPhase } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { MigrationService } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_service_pb.js";
import { MIGRATION_KIND, migrationFinished, QuantixError, type Store } from "@quantix/core";
import { requireWellFormedId, resourceRoute } from "../resources/index.js";
import type { Route } from "@quantix/rpc";

/**
 * Quantixkvm.compute.v1.MigrationService: the migration kind's generic reads, and
 * CancelMigration, which asks the migration controller to stop (spec.cancel).
 */
export function migrationServiceRoute(store: Store): Route {
  return resourceRoute(MigrationService, MIGRATION_KIND as never, store, {
    impl: {
      cancelMigration: async (req) => {
        requireWellFormedId("id", req.id);
        return store.of(MIGRATION_KIND).update(
          req.id,
          (cur) => {
            if (migrationFinished(cur)) {
              if (cur.status?.phase === MPhase.CANCELLED) return undefined;
              throw new QuantixError("failed_precondition", `migration '${cur.id}' has already ended (${MPhase[cur.status!.phase]}); there is nothing to cancel`);
            }
            if (cur.spec?.cancel) return undefined;
            cur.spec!.cancel = true;
            cur.generation += 1n;
            return cur;
          },
          { actor: "api" },
        );
      },
    },
  });
}
