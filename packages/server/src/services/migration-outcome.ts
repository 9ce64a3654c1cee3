import type { HypervisorPort } from "@quantix/core";

/** Where a migration left its VM: on the target (it completed) or on the source. */
export type MigrationOutcome = "target" | "source";

/**
 * Decides where an interrupted or failed migration left its VM by observing both nodes:
 * the source's agent deletes its copy as soon as the hypervisor completes the migration,
 * even if the control plane never heard of the completion, so a source without the VM
 * and a target running it means the migration completed. Anything else keeps the source
 * (the target's copy is incomplete or gone). Throws when a node cannot be asked: the
 * outcome stays unresolved and the caller retries, never guessing.
 */
export async function migrationOutcome(vmId: string, source: HypervisorPort, target: HypervisorPort): Promise<MigrationOutcome> {
  const [src, dst] = await Promise.all([source.observe(vmId), target.observe(vmId)]);
  return src.power === "absent" && dst.power === "running" ? "target" : "source";
}
