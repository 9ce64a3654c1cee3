import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient } from "@connectrpc/connect";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { startTestServer, transports, type TestServer } from "@quantix/testing";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../../../", import.meta.url));
const WEB = "11111111-1111-1111-1111-111111111111";

/** The "Testing the API" commands of backend-phase2-core-services.md, verbatim but for the port. */
const SEED_CURLS = {
  listVms: `curl -X POST http://localhost:8080/Quantixkvm.compute.v1.VMService/ListVMs \\
  -H "Content-Type: application/json" \\
  -d '{}'`,
  createVm: `curl -X POST http://localhost:8080/Quantixkvm.compute.v1.VMService/CreateVM \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "my-vm",
    "projectId": "00000000-0000-0000-0000-000000000001",
    "spec": {
      "cpu": {"cores": 2},
      "memory": {"sizeMib": 4096}
    }
  }'`,
  startVm: `curl -X POST http://localhost:8080/Quantixkvm.compute.v1.VMService/StartVM \\
  -H "Content-Type: application/json" \\
  -d '{"id": "11111111-1111-1111-1111-111111111111"}'`,
  listNodes: `curl -X POST http://localhost:8080/Quantixkvm.compute.v1.NodeService/ListNodes \\
  -H "Content-Type: application/json" \\
  -d '{}'`,
};

async function curl(command: string, port: number): Promise<{ status: number; body: Record<string, unknown> }> {
  // The seed's text goes to bash as a script; only the port changes.
  const script = `${command.replace("localhost:8080", `localhost:${port}`)} -s -w '\\n%{http_code}'`;
  const { stdout } = await run("bash", ["-c", script]);
  const nl = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(nl + 1)), body: JSON.parse(stdout.slice(0, nl)) as Record<string, unknown> };
}

describe("one port, every protocol", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.close());

  test("the seed's curl commands work verbatim over HTTP/1.1 JSON", async () => {
    const list = await curl(SEED_CURLS.listVms, s.cp.port);
    assert.equal(list.status, 200);
    const vms = list.body["vms"] as { id: string; name: string; spec: { cpu: { cores: number }; memory: { sizeMib: string } }; status: { state: string } }[];
    const byName = Object.fromEntries(vms.map((v) => [v.name, v]));
    assert.deepEqual(
      ["web-server-01", "db-server-01", "dev-workstation", "cache-server"].map((n) => [n, byName[n]?.spec.cpu.cores, byName[n]?.spec.memory.sizeMib, byName[n]?.status.state]),
      [
        ["web-server-01", 4, "8192", "RUNNING"],
        ["db-server-01", 8, "32768", "RUNNING"],
        ["dev-workstation", 2, "4096", "STOPPED"],
        ["cache-server", 2, "16384", "RUNNING"],
      ],
    );
    assert.deepEqual(vms.map((v) => v.id).sort(), ["1", "2", "3", "4"].map((d) => [8, 4, 4, 4, 12].map((n) => d.repeat(n)).join("-")));
    assert.equal(list.body["totalCount"], 4);

    const created = await curl(SEED_CURLS.createVm, s.cp.port);
    assert.equal(created.status, 200, JSON.stringify(created.body));
    assert.equal(created.body["name"], "my-vm");
    assert.equal(created.body["projectId"], "00000000-0000-0000-0000-000000000001");
    assert.match(String(created.body["id"]), /^[0-9a-f-]{36}$/);
    const again = await curl(SEED_CURLS.createVm, s.cp.port);
    assert.equal(again.status, 409);
    assert.equal(again.body["code"], "already_exists");

    const started = await curl(SEED_CURLS.startVm, s.cp.port);
    assert.equal(started.status, 200);
    assert.equal((started.body["status"] as { state: string }).state, "RUNNING");

    const nodes = await curl(SEED_CURLS.listNodes, s.cp.port);
    assert.equal(nodes.status, 200);
    const hosts = (nodes.body["nodes"] as { hostname: string; status: { phase: string; hypervisor: { type: string } }; spec: { cpu: { model: string }; memory: { totalMib: string } } }[]).map((n) => [
      n.hostname,
      n.status.phase,
      n.spec.cpu.model.split(" ").slice(0, 2).join(" "),
      n.spec.memory.totalMib,
      n.status.hypervisor.type,
    ]);
    assert.deepEqual(hosts, [
      ["hypervisor-01", "READY", "Intel Xeon", "262144", "simulated"],
      ["hypervisor-02", "READY", "Intel Xeon", "262144", "simulated"],
      ["hypervisor-03", "READY", "AMD EPYC", "524288", "simulated"],
    ]);
  });

  test("/_/health answers with status, version, uptime and store health", async () => {
    const { stdout } = await run("curl", ["-s", `http://localhost:${s.cp.port}/_/health`]);
    const h = JSON.parse(stdout) as { status: string; version: string; uptime_seconds: number; store: { ok: boolean; kind: string } };
    assert.equal(h.status, "ok");
    assert.match(h.version, /^\d+\.\d+\.\d+/);
    assert.equal(typeof h.uptime_seconds, "number");
    assert.deepEqual([h.store.ok, h.store.kind], [true, "memory"]);
  });

  test("Connect JSON, Connect binary over h2c, gRPC and gRPC-Web all serve GetVM and WatchVMs", async () => {
    for (const [name, transport] of Object.entries(transports(s.url))) {
      const vms = createClient(VMService, transport);
      const vm = await vms.getVM({ id: WEB });
      assert.equal(vm.name, "web-server-01", name);
      const abort = new AbortController();
      let added = 0;
      for await (const u of vms.watchVMs({}, { signal: abort.signal })) {
        if (u.vm) added++;
        else break;
      }
      abort.abort();
      assert.ok(added >= 4, `${name}: streamed the snapshot (${added})`);
      const nodes = await createClient(NodeService, transport).listNodes({ pageSize: 2 });
      assert.equal(nodes.nodes.length, 2, name);
      assert.notEqual(nodes.nextPageToken, "", name);
    }
  });

  test("a real @grpc/grpc-js client over cleartext HTTP/2", async () => {
    const def = protoLoader.loadSync("Quantixkvm/compute/v1/vm_service.proto", {
      includeDirs: [`${root}proto`, `${root}third_party/proto`],
      longs: String,
      enums: String,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { Quantixkvm: { compute: { v1: { VMService: grpc.ServiceClientConstructor } } } };
    const client = new pkg.Quantixkvm.compute.v1.VMService(`127.0.0.1:${s.cp.port}`, grpc.credentials.createInsecure());
    try {
      const vm = await new Promise<{ name: string; status: { state: string } }>((resolve, reject) =>
        client["GetVM"]!({ id: WEB }, (err: grpc.ServiceError | null, res: { name: string; status: { state: string } }) => (err ? reject(err) : resolve(res))),
      );
      assert.equal(vm.name, "web-server-01");
      assert.equal(vm.status.state, State[State.RUNNING]);
      const err = await new Promise<grpc.ServiceError>((resolve) => client["GetVM"]!({ id: "nope" }, (e: grpc.ServiceError) => resolve(e)));
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.match(err.details, /nope/);
      const events: string[] = await new Promise((resolve, reject) => {
        const out: string[] = [];
        const call = client["WatchVMs"]!({});
        call.on("data", (u: { type: string }) => {
          out.push(u.type);
          if (u.type === "EVENT_TYPE_SYNCED") {
            call.cancel();
            resolve(out);
          }
        });
        call.on("error", (e: grpc.ServiceError) => (e.code === grpc.status.CANCELLED ? resolve(out) : reject(e)));
      });
      assert.ok(events.filter((t) => t === "EVENT_TYPE_ADDED").length >= 4);
    } finally {
      client.close();
    }
  });

  test("buf curl discovers every service through reflection (v1 and v1alpha) and calls one", async () => {
    const buf = `${root}node_modules/.bin/buf`;
    for (const reflect of ["grpc-v1", "grpc-v1alpha"]) {
      const { stdout: services } = await run(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", reflect, "--list-services", s.url]);
      for (const svc of ["Quantixkvm.compute.v1.VMService", "Quantixkvm.compute.v1.NodeService", "Quantixkvm.storage.v1.VolumeService", "Quantixkvm.network.v1.VpnServiceManager", "vmm.v1.VmService", "virtualdom.v1.MemoryGateway"]) {
        assert.ok(services.split("\n").includes(svc), `${reflect} lists ${svc}`);
      }
      const { stdout } = await run(buf, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", reflect, "-d", JSON.stringify({ id: WEB }), `${s.url}/Quantixkvm.compute.v1.VMService/GetVM`]);
      assert.equal((JSON.parse(stdout) as { name: string }).name, "web-server-01");
    }
  });
});
