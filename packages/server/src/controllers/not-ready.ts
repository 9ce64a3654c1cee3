/**
 * What a VM needs on its node is still being made (its volumes, its NICs' ports): the VM
 * waits (PROVISIONING, with the condition named here False); it has not failed.
 */
export class NotReadyYet extends Error {
  override readonly name = "NotReadyYet";
  constructor(
    message: string,
    readonly condition: { readonly type: string; readonly reason: string } = { type: "VolumesReady", reason: "WaitingForVolumes" },
  ) {
    super(message);
  }
}
