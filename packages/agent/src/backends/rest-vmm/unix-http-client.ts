import { request } from "node:http";
import { QuantixError } from "@quantix/core";

/** A JSON answer of a VMM's HTTP API. */
export interface ApiAnswer {
  readonly status: number;
  readonly body: unknown;
}

/**
 * HTTP/1.1 over a VMM's unix socket (both Firecracker and Cloud Hypervisor serve their
 * API this way). Every call has a deadline, so a hung VMM cannot hang the agent.
 */
export class UnixHttpClient {
  constructor(private readonly socketPath: string, private readonly timeoutMs = 5000) {}

  /** Sends one request; rejects with UNAVAILABLE when the socket does not answer in time. */
  send(method: string, path: string, body?: unknown): Promise<ApiAnswer> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string | number> = { accept: "application/json" };
    if (payload !== undefined) Object.assign(headers, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) });
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, method, path, headers, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          try {
            parsed = text === "" ? undefined : JSON.parse(text);
          } catch {
            // Not JSON: keep the text, it still explains an error.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on("error", (err) => reject(new QuantixError("unavailable", `VMM API ${method} ${path}: ${err.message}`, [], { cause: err })));
      req.end(payload);
    });
  }

  /** Sends one request and rejects unless the VMM answers 2xx; resolves to the body. */
  async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const answer = await this.send(method, path, body);
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    const fault = (answer.body as { fault_message?: unknown } | undefined)?.fault_message;
    const detail = typeof fault === "string" ? `: ${fault}` : "";
    throw new QuantixError("internal", `VMM API ${method} ${path} answered ${answer.status}${detail}`);
  }
}
