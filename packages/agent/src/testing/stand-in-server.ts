import { appendFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { loadApiSpec, type ApiSpec, type VmmFlavor } from "./api-spec.js";
import { CloudHypervisorMachine } from "./stand-in-cloud-hypervisor.js";
import { FirecrackerMachine } from "./stand-in-firecracker.js";
import type { StandInEffects, StandInMachine, StandInReply } from "./stand-in-machine.js";

/** A request the spec does not allow, or a reply of the stand-in that breaks the spec. */
export interface Violation {
  readonly method: string;
  readonly path: string;
  readonly problem: string;
}

/** The private path tests read violations from; it is not in either spec. */
export const violationsPath = "/__standin/violations";

/** Names a directory for violation files; tests set it so that deleting a VM's state dir keeps them. */
export const VIOLATIONS_DIR_ENV = "QUANTIX_STANDIN_VIOLATIONS_DIR";

/**
 * Where the stand-in appends one JSON {@link Violation} per line: `<pid>.jsonl` in
 * $QUANTIX_STANDIN_VIOLATIONS_DIR when set, else the file next to the API socket.
 */
export function violationsFile(apiSocket: string): string {
  const dir = process.env[VIOLATIONS_DIR_ENV];
  return dir ? join(dir, `${process.pid}.jsonl`) : `${apiSocket}.violations`;
}

/** Options of one stand-in VMM. */
export interface StandInOptions {
  readonly flavor: VmmFlavor;
  readonly apiSocket: string;
  readonly id: string;
  /** How often a running guest writes a console line. */
  readonly tickMs: number;
  /** Called when the VMM would exit (guest powered off, vmm.shutdown). */
  readonly exit: (code: number) => void;
}

/** Serves the flavor's API on the unix socket and checks every request against the spec. */
export function serveStandIn(options: StandInOptions): Server {
  const spec = loadApiSpec(options.flavor);
  const seen: Violation[] = [];
  const record = (v: Violation): void => {
    seen.push(v);
    appendFileSync(violationsFile(options.apiSocket), JSON.stringify(v) + "\n");
  };
  let consoleFile: () => string | undefined = () => undefined;
  const effects: StandInEffects = {
    console: (line) => {
      const file = consoleFile();
      if (file) appendFileSync(file, line + "\r\n");
      else process.stdout.write(line + "\r\n");
    },
    exitSoon: (code) => setTimeout(() => options.exit(code), 100).unref(),
  };
  let machine: StandInMachine;
  if (options.flavor === "firecracker") {
    const fc = new FirecrackerMachine(options.id, effects);
    consoleFile = () => fc.serialOutPath();
    machine = fc;
  } else {
    const ch = new CloudHypervisorMachine(effects);
    consoleFile = () => ch.serialFile();
    machine = ch;
  }
  let ticks = 0;
  setInterval(() => {
    if (machine.guestRunning()) effects.console(`[stand-in ${options.flavor}] guest alive, tick ${++ticks}`);
  }, options.tickMs).unref();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = new URL(req.url ?? "/", "http://localhost").pathname;
      const reply =
        req.method === "GET" && path === violationsPath ? { status: 200, body: seen } : answer(spec, machine, req, Buffer.concat(chunks).toString("utf8"), record);
      send(res, reply);
    });
  });
  server.listen(options.apiSocket);
  return server;
}

function answer(spec: ApiSpec, machine: StandInMachine, req: IncomingMessage, raw: string, record: (v: Violation) => void): StandInReply {
  const method = req.method ?? "GET";
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  const violation = (problem: string): void => record({ method, path, problem });
  const match = spec.find(method, path);
  if (match.kind !== "ok") {
    const problem = match.kind === "unknown-path" ? "no such path in the spec" : `method not in the spec (allowed: ${match.allowed.join(", ")})`;
    violation(problem);
    return machine.refusal(match.kind === "unknown-path" ? 404 : 405, problem);
  }
  const { op } = match;
  let body: unknown;
  if (raw.trim() !== "") {
    try {
      body = JSON.parse(raw);
    } catch {
      violation("body is not JSON");
      return machine.refusal(400, "body is not JSON");
    }
  }
  const bodyProblems =
    op.bodySchema === undefined
      ? body === undefined ? [] : ["the operation takes no body"]
      : body === undefined
        ? op.bodyRequired ? ["the required body is missing"] : []
        : spec.validate(op.bodySchema, body);
  if (bodyProblems.length > 0) {
    bodyProblems.forEach(violation);
    return machine.refusal(400, bodyProblems.join("; "));
  }
  const reply = machine.handle(method.toUpperCase(), op.template, match.params, body);
  if (reply.problem) violation(reply.problem);
  if (reply.status < 300) {
    // The stand-in checks itself too, so a test never passes against answers the real VMM would not give.
    const schema = op.responses.has(String(reply.status)) ? op.responses.get(String(reply.status)) : op.responses.get("default");
    if (schema === undefined) violation(`stand-in answered ${reply.status}, which the spec does not document`);
    else if (schema === null && reply.body !== undefined) violation(`stand-in answered ${reply.status} with a body the spec does not have`);
    else if (schema) spec.validate(schema, reply.body).forEach((p) => violation(`stand-in reply: ${p}`));
  }
  return reply;
}

function send(res: ServerResponse, reply: StandInReply): void {
  if (reply.body === undefined) {
    res.writeHead(reply.status).end();
    return;
  }
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
}
