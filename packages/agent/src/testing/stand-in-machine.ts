/** What a stand-in state machine answers to one spec-valid request. */
export interface StandInReply {
  readonly status: number;
  /** The JSON body; undefined for an empty body. */
  readonly body?: unknown;
  /**
   * Set on a refusal (wrong state, inconsistent input): the stand-in records it as a
   * violation, because a correct backend never asks a VMM for something it must refuse.
   */
  readonly problem?: string;
}

/** What a state machine may do besides answering. */
export interface StandInEffects {
  /** Writes a line of "guest console" output where the VMM was told to send it. */
  console(line: string): void;
  /** Ends the VMM process soon with `code`, as the real VMM does when the guest powers off. */
  exitSoon(code: number): void;
}

/** The VM state machine of one stand-in flavor, fed only requests that match the spec. */
export interface StandInMachine {
  handle(method: string, template: string, params: Readonly<Record<string, string>>, body: unknown): StandInReply;
  /** Whether the guest runs now (and so writes console output). */
  guestRunning(): boolean;
  /** How a refusal is answered: Firecracker sends a fault message, Cloud Hypervisor only a status. */
  refusal(status: number, problem: string): StandInReply;
}
