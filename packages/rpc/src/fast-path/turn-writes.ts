import type * as http from "node:http";

/**
 * HTTP/1.1 answers of one turn of the event loop, written back to back at its end
 * (setImmediate: after the poll phase has handed over every connection that had a
 * request). A socket write pays for waking the process that reads it when that process
 * sleeps, and on loopback (a local proxy, the bench's load generator) the wakeup is most of
 * the write's cost: answers written as each call finishes, tens of microseconds apart,
 * wake the reader once each; written together, the first wakes it and the rest find it
 * awake. Each connection still gets one write per answer, in its order. GetVM, Connect
 * JSON, 32 keep-alive connections: ~53-63 -> ~39-44 µs of server CPU per call (perf: the
 * writev's receiver wakeup was ~10 µs a call, against ~3 for the bare node:http server,
 * whose faster answers found the client still awake).
 */
export class TurnWrites {
  private pending: Answer[] = [];
  private armed = false;
  private readonly flush = () => this.write();

  /**
   * Makes sure this turn ends with a write. Called when a request arrives, so the answers
   * go out before what the call's own end schedules (the log lines' write, itself a
   * syscall): a lone call would otherwise wait for its log line.
   */
  arm(): void {
    if (this.armed) return;
    this.armed = true;
    setImmediate(this.flush);
  }

  /** Queues an answer; it goes out at the end of this turn, unless the response is gone by then. */
  add(res: http.ServerResponse, status: number, headers: Record<string, string>, body: Uint8Array): void {
    this.arm();
    this.pending.push(new Answer(res, status, headers, body));
  }

  private write(): void {
    this.armed = false;
    const list = this.pending;
    this.pending = [];
    for (const a of list) {
      const res = a.res;
      if (res.destroyed || res.headersSent) continue;
      try {
        res.writeHead(a.status, a.headers);
        res.end(a.body);
      } catch {
        // A header Node refuses: no answer can be written, and the rest of the turn's must still go.
        res.destroy();
      }
    }
  }
}

class Answer {
  constructor(
    readonly res: http.ServerResponse,
    readonly status: number,
    readonly headers: Record<string, string>,
    readonly body: Uint8Array,
  ) {}
}
