import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { createSimulatedHost } from "@quantix/agent";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import type { Logger } from "@quantix/rpc";
import { ON_SIMULATED_NODES } from "@quantix/testing";

describe("gRPC served straight from HTTP/2 streams", () => {
  let cp: ControlPlane;
  const lines: Record<string, unknown>[] = [];
  // The control plane's own lines: its demo nodes' simulated hosts log their vmm.v1 calls too (tagged simulated_host).
  const log: Logger = { log: (_lvl, msg, fields) => msg === "rpc" && fields?.["simulated_host"] === undefined && lines.push(fields ?? {}) };
  before(async () => {
    cp = await startControlPlane(loadConfig({}, { port: 0, store: { kind: "memory" }, logLevel: "silent", simBootMs: 1500 }), { log, simulatedHosts: createSimulatedHost });
  });
  after(() => cp.close());

  test("errors carry the code, message and BadRequest details as grpc-status-details-bin", async () => {
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
    const err = await vms.createVM({ name: "1bad", spec: { cpu: { cores: 0 }, memory: { sizeMib: 1n } } }).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.InvalidArgument);
    const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
    assert.deepEqual(fields.sort(), ["name", "spec.cpu.cores", "spec.memory.size_mib"]);
  });

  test("the client's deadline reaches the implementation: a power action answers before it", async () => {
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
    // The demo's nodes are simulated and tainted: this VM tolerates it on purpose.
    const vm = await vms.createVM({ name: "deadline", spec: { cpu: { cores: 1 }, memory: { sizeMib: 512n }, placement: ON_SIMULATED_NODES } });
    const t0 = Date.now();
    const res = await vms.startVM({ id: vm.id }, { timeoutMs: 400 });
    assert.ok(Date.now() - t0 < 400);
    assert.ok([State.PROVISIONING, State.STARTING].includes(res.status!.state), State[res.status!.state]);
  });

  test("an oversized request is RESOURCE_EXHAUSTED, and the server keeps serving", async () => {
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
    const err = await vms.createVM({ name: "big", description: "x".repeat(5 * 1024 * 1024), spec: { cpu: { cores: 1 }, memory: { sizeMib: 512n } } }).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.ResourceExhausted, err.message);
    assert.equal((await vms.getVM({ id: "11111111-1111-1111-1111-111111111111" })).name, "web-server-01");
  });

  test("compressed calls go to the Connect router and work the same", async () => {
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url, sendCompression: compressionGzip, compressMinBytes: 0 }));
    const vm = await vms.getVM({ id: "11111111-1111-1111-1111-111111111111" });
    assert.equal(vm.name, "web-server-01");
  });

  test("every call writes one log line with procedure, code, duration and ids", async () => {
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
    lines.length = 0;
    await vms.getVM({ id: "22222222-2222-2222-2222-222222222222" });
    await vms.getVM({ id: "missing" }).catch(() => undefined);
    assert.deepEqual(
      lines.map((l) => [l["procedure"], l["code"], l["id"], typeof l["duration_ms"]]),
      [
        ["Quantixkvm.compute.v1.VMService/GetVM", "ok", "22222222-2222-2222-2222-222222222222", "number"],
        ["Quantixkvm.compute.v1.VMService/GetVM", "not_found", "missing", "number"],
      ],
    );
  });
});
