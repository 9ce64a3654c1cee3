import type { ObservedNic } from "@quantix/core";

/** What this control plane last confirmed about one VM with its agent. */
interface View {
  /** Calls on the VM in flight. */
  busy: number;
  /** Changed by every call's start and end: an answer is confirmed only if nothing ran meanwhile. */
  version: number;
  /** The agent's answer agreed with the watch, and nothing happened to the VM since but watch events. */
  fresh: boolean;
  /** The VM's NICs on the agent as its last GetVmInfo answered (undefined: not known). */
  nics: readonly ObservedNic[] | undefined;
  /** A quiet answer the watch had not caught up with: the state it said, at `version`. */
  expect: { readonly state: number; readonly version: number; readonly all: number } | undefined;
}

/** When an agent's answer about a VM was asked: it confirms the view only if no call touched the VM since. */
export interface ViewMark {
  readonly vmId: string;
  readonly version: number;
  readonly all: number;
}

/**
 * When an agent's watch stream can stand for a GetVmInfo (AgentHypervisor.observeWatched):
 * a VM's view is fresh once an answer of the agent itself (GetVmInfo, or BootVm's state)
 * agreed with what the watch said, with no call on the VM started or in flight between
 * the question and now. After that only the agent changes the VM by itself (a guest that
 * powers off, a process that dies), and those changes come as watch events, in order. Any
 * call that may change the VM (a boot, a shutdown, a NIC plugged) makes it stale until
 * an answer confirms it again (or the first event after an answer the watch had not
 * caught up with says what the answer said); a call that may change any VM (a migration) and every
 * reconnect of the watch make all of them stale. Pure bookkeeping, no I/O.
 */
export class AgentVmViews {
  private readonly views = new Map<string, View>();
  /** Only grows, so that a view made again (a VM deleted, then defined again) never matches an older mark. */
  private seq = 0;
  /** Calls that may change any VM in flight, and a version every reset (also their start and end) changes. */
  private busyAll = 0;
  private all = 0;

  /** The moment before asking the agent about `vmId`. */
  mark(vmId: string): ViewMark {
    return { vmId, version: this.view(vmId).version, all: this.all };
  }

  /**
   * Runs `fn`, a call that may change VM `vmId` (undefined: any VM); `nics`: it may change
   * its NICs too. Resolves with its result and the mark an answer in it confirms (it is
   * current only if no other call ran meanwhile).
   */
  async acting<T>(vmId: string | undefined, fn: () => Promise<T>, nics = false): Promise<[T, ViewMark | undefined]> {
    if (vmId === undefined) {
      this.reset();
      this.busyAll++;
      try {
        return [await fn(), undefined];
      } finally {
        this.busyAll--;
        this.reset();
      }
    }
    const v = this.view(vmId);
    v.busy++;
    const mine = (v.version = ++this.seq);
    v.fresh = false;
    v.expect = undefined;
    if (nics) v.nics = undefined;
    const all = this.all;
    let value: T;
    let quiet = false;
    try {
      value = await fn();
    } finally {
      v.busy--;
      // Another call on the VM (or on all of them) meanwhile: this one's answer may be older than its effect.
      quiet = v.version === mine && v.busy === 0 && this.all === all;
      v.version = ++this.seq;
    }
    return [value, quiet ? { vmId, version: v.version, all } : undefined];
  }

  /**
   * An agent's answer about the VM asked at `mark`: the view is fresh if the answer agrees
   * with the watch (`agrees`), the NICs are known (`nics`, or from before) and no call
   * touched the VM since the mark; otherwise nothing changes.
   */
  confirm(mark: ViewMark | undefined, agrees: boolean, nics?: readonly ObservedNic[], state?: number): void {
    if (!mark) return;
    const v = this.views.get(mark.vmId);
    if (!v || !this.quiet(v, mark)) return;
    if (nics) v.nics = nics;
    v.fresh = agrees && v.nics !== undefined;
    // The agent answered before its event arrived (they travel apart): the next event decides.
    v.expect = !agrees && state !== undefined ? { state, version: mark.version, all: mark.all } : undefined;
  }

  /**
   * A watch event said VM `vmId` is in `state`: when it is the first since a quiet answer
   * the watch had not caught up with and says what the answer said, the view is fresh;
   * any other event leaves it stale until the agent is asked again.
   */
  seen(vmId: string, state: number): void {
    const v = this.views.get(vmId);
    const e = v?.expect;
    if (!v || !e) return;
    v.expect = undefined;
    if (e.state === state && this.quiet(v, { vmId, ...e })) v.fresh = v.nics !== undefined;
  }

  /** The NICs of a VM whose view is fresh; undefined when it is not (the caller asks the agent). */
  freshNics(vmId: string): readonly ObservedNic[] | undefined {
    const v = this.views.get(vmId);
    return v?.fresh && this.busyAll === 0 ? v.nics : undefined;
  }

  /** Whether nothing touched the VM since `mark` and no call on it (or on all VMs) runs. */
  private quiet(v: View, mark: ViewMark): boolean {
    return v.version === mark.version && v.busy === 0 && this.all === mark.all && this.busyAll === 0;
  }

  /** Makes every view stale (the watch broke or synced again: what it said meanwhile may be lost). */
  reset(): void {
    this.all++;
    for (const [id, v] of this.views) {
      if (v.busy === 0) this.views.delete(id);
      else Object.assign(v, { fresh: false, nics: undefined, expect: undefined, version: ++this.seq });
    }
  }

  /** A VM the watch no longer has: its view goes (or turns stale while a call on it runs). */
  gone(vmId: string): void {
    const v = this.views.get(vmId);
    if (!v) return;
    if (v.busy === 0) this.views.delete(vmId);
    else Object.assign(v, { fresh: false, nics: undefined, expect: undefined, version: ++this.seq });
  }

  private view(vmId: string): View {
    let v = this.views.get(vmId);
    if (!v) this.views.set(vmId, (v = { busy: 0, version: ++this.seq, fresh: false, nics: undefined, expect: undefined }));
    return v;
  }
}
