/**
 * Who may type into each VM's console: the arbiter of vmm.v1 AttachConsole sessions.
 * Pure bookkeeping (no I/O): the agent is the one place per VM, whatever control-plane
 * replica a client came through, so the rule is kept here.
 *
 * The rule: several viewers at once, one writer at a time per VM. The first session
 * asking to write gets the role; later ones are viewers unless they pass force, which
 * displaces the holder (told "displaced"; it stays attached as a viewer). When the
 * writer leaves, the role is free and the viewers are told so; nobody takes it over by
 * itself (a viewer attaches again with write to take it).
 */

import { QuantixError } from "@quantix/core";

/** A session's role as its events say it. */
export type ConsoleRoleKind = "writer" | "viewer" | "displaced";

/** What a session is told: at attach and whenever its role or the VM's writer changes. */
export interface ConsoleRoleEvent {
  readonly role: ConsoleRoleKind;
  /** Whether some session holds the writer role. */
  readonly writerPresent: boolean;
  readonly message: string;
  /** Input bytes dropped because the session is not the writer. */
  readonly droppedBytes: number;
}

/** One attached session. */
export interface ConsoleSession {
  readonly vmId: string;
  /** Whether this session holds the writer role now. */
  readonly isWriter: boolean;
  /** Tells the session that `bytes` of its input were dropped (it is not the writer). */
  dropped(bytes: number): void;
  /** Detaches; frees the writer role if this session held it. Idempotent. */
  leave(): void;
}

/** At most this many sessions per VM (RESOURCE_EXHAUSTED beyond). */
export const MAX_CONSOLE_SESSIONS = 16;

interface Entry {
  readonly notify: (e: ConsoleRoleEvent) => void;
}

interface VmSessions {
  readonly sessions: Set<Entry>;
  writer: Entry | undefined;
}

/** The console sessions of every VM on the host. */
export class ConsoleSessions {
  private readonly vms = new Map<string, VmSessions>();

  constructor(private readonly maxPerVm = MAX_CONSOLE_SESSIONS) {}

  /** Sessions attached to `vmId` now. */
  count(vmId: string): number {
    return this.vms.get(vmId)?.sessions.size ?? 0;
  }

  /**
   * Attaches a session; `notify` hears its first role event before this returns, and
   * every later one. RESOURCE_EXHAUSTED when the VM has `maxPerVm` sessions.
   */
  join(vmId: string, write: boolean, force: boolean, notify: (e: ConsoleRoleEvent) => void): ConsoleSession {
    let vm = this.vms.get(vmId);
    if ((vm?.sessions.size ?? 0) >= this.maxPerVm) {
      throw new QuantixError("resource_exhausted", `VM '${vmId}' already has ${this.maxPerVm} console sessions attached, the most allowed; detach one first`);
    }
    if (!vm) this.vms.set(vmId, (vm = { sessions: new Set(), writer: undefined }));
    const v = vm;
    const me: Entry = { notify };
    v.sessions.add(me);
    const event = (role: ConsoleRoleKind, message: string, droppedBytes = 0): ConsoleRoleEvent => ({ role, writerPresent: v.writer !== undefined, message, droppedBytes });
    if (write && (v.writer === undefined || force)) {
      const displaced = v.writer;
      v.writer = me;
      notify(event("writer", displaced ? "you took the writer role with force; the previous writer is now a viewer" : "you are the writer: your input reaches the guest"));
      displaced?.notify(event("displaced", "another session took the writer role with force; you are a viewer now"));
      for (const o of v.sessions) if (o !== me && o !== displaced) o.notify(event("viewer", "another session is the writer now"));
    } else if (write) {
      notify(event("viewer", "the writer role is held by another session; you are a viewer (attach with force to take it)"));
    } else {
      notify(event("viewer", v.writer ? "you are a viewer; another session is the writer" : "you are a viewer; nobody holds the writer role"));
    }
    let left = false;
    return {
      vmId,
      get isWriter() {
        return v.writer === me;
      },
      dropped: (bytes) => notify(event(v.writer === me ? "writer" : "viewer", `${bytes} input bytes dropped: this session is a viewer, only the writer's input reaches the guest`, bytes)),
      leave: () => {
        if (left) return;
        left = true;
        v.sessions.delete(me);
        if (v.writer === me) {
          v.writer = undefined;
          for (const o of v.sessions) o.notify(event("viewer", "the writer left; the writer role is free (attach with write to take it)"));
        }
        if (v.sessions.size === 0 && this.vms.get(vmId) === v) this.vms.delete(vmId);
      },
    };
  }
}
