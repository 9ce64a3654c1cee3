import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, stat, writeFile, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { VirtualMachineSchema, VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { createTestPki, ON_SIMULATED_NODES, SIMULATED_KERNEL, startTestServer, TEST_ADMIN_PASSWORD, TestAgent, until, type TestServer } from "@quantix/testing";
import { parse as parseYaml } from "yaml";
import { run } from "./cli.js";
import { resolveConnection, DEFAULT_URL } from "./config.js";

// The CLI in-process against a real control plane (memory store, demo nodes on simulated
// hosts): each command's table and its JSON compared with what the API returns.

let s: TestServer;
let dir: string;
let cfgPath: string;

interface Result {
  code: number;
  out: string;
  err: string;
}

function sink(): { stream: Writable; text: () => string } {
  let text = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => text };
}

/** Runs `quantix ARGS` in-process against the test server (unless env says otherwise). */
async function q(args: string[], opts: { env?: Record<string, string | undefined>; stdin?: string; signal?: AbortSignal; live?: (out: () => string) => void } = {}): Promise<Result> {
  const out = sink();
  const err = sink();
  opts.live?.(out.text);
  const code = await run(args, {
    stdout: out.stream,
    stderr: err.stream,
    stdin: Readable.from([opts.stdin ?? ""]),
    env: { QUANTIX_CONFIG: cfgPath, QUANTIX_URL: s.url, ...opts.env },
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  return { code, out: out.text(), err: err.text() };
}

const ok = (r: Result) => {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.out}\nstderr: ${r.err}`);
  return r;
};
/** The rows of a table (header first), split on runs of 2+ spaces. */
const rows = (text: string) => text.trim().split("\n").map((l) => l.trim().split(/ {2,}/));

const VM_FILE = `# a VM the simulated demo nodes run
spec:
  cpu: {cores: 1}
  memory: {sizeMib: 512}
  boot: {directBoot: {kernelPath: ${SIMULATED_KERNEL}}}
  placement:
    tolerations:
      - {key: ${ON_SIMULATED_NODES.tolerations[0]!.key}, operator: TOLERATION_OPERATOR_EQUAL, value: "${ON_SIMULATED_NODES.tolerations[0]!.value}", effect: TAINT_EFFECT_NO_SCHEDULE}
labels: {app: cli-test}
`;
let vmFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "quantix-cli-"));
  cfgPath = join(dir, "conf", "quantix", "config.yaml");
  vmFile = join(dir, "vm.yaml");
  await writeFile(vmFile, VM_FILE);
  s = await startTestServer({ storageDir: join(dir, "storage") });
});
after(async () => {
  await s.close();
  await rm(dir, { recursive: true, force: true });
});

describe("vm", () => {
  it("create (--from-file YAML and flags) → list → show → start --wait → stop --wait → delete --wait, as tables and as JSON", async () => {
    const created = ok(await q(["vm", "create", "cli-one", "--from-file", vmFile, "--cpus", "2", "--memory", "1GiB", "--label", "tier=web"]));
    const [head, row] = rows(created.out);
    assert.deepEqual(head!.slice(0, 5), ["ID", "NAME", "STATE", "CPUS", "MEMORY"]);
    assert.equal(row![1], "cli-one");
    assert.equal(row![3], "2");
    assert.equal(row![4], "1.0GiB");
    assert.match(created.err, /created VM cli-one \(([0-9a-f-]{36})\)/);
    const id = /\(([0-9a-f-]{36})\)/.exec(created.err)![1]!;
    assert.equal(row![0], id.slice(0, 8), "the id abbreviated in the table");
    const api = await s.vms.getVM({ id });
    assert.equal(api.spec?.cpu?.cores, 2);
    assert.equal(api.spec?.memory?.sizeMib, 1024n);
    assert.deepEqual(api.labels, { app: "cli-test", tier: "web" });
    assert.equal(api.spec?.placement?.tolerations.length, 1);

    // list: the table has it; the JSON is the API's list.
    const table = ok(await q(["vm", "list"]));
    assert.ok(rows(table.out).some((r) => r[1] === "cli-one" && r[2] === "STOPPED"), table.out);
    const listed = JSON.parse(ok(await q(["vm", "list", "-o", "json"])).out) as { id: string; name: string }[];
    const fromApi = (await s.vms.listVMs({})).vms;
    assert.deepEqual(listed.map((v) => v.id).sort(), fromApi.map((v) => v.id).sort());
    assert.deepEqual(
      listed.find((v) => v.id === id),
      toJson(VirtualMachineSchema, (await s.vms.getVM({ id })), { alwaysEmitImplicit: false }),
    );

    // show by name, by id prefix, by full id: the same VM.
    const byName = JSON.parse(ok(await q(["vm", "show", "cli-one", "-o", "json"])).out) as { id: string; spec: { cpu: { cores: number } } };
    assert.equal(byName.id, id);
    assert.equal(byName.spec.cpu.cores, 2);
    assert.equal((JSON.parse(ok(await q(["vm", "show", id.slice(0, 8), "-o", "json"])).out) as { id: string }).id, id);
    const shown = ok(await q(["vm", "show", id]));
    assert.ok(rows(shown.out).some((r) => r[0] === "spec.cpu.cores" && r[1] === "2"), shown.out);

    const started = ok(await q(["vm", "start", "cli-one", "--wait", "--timeout", "20s"]));
    assert.equal(rows(started.out)[1]![2], "RUNNING");
    // The NODE column names the node by its hostname, as the API's node has it.
    const placedOn = (await s.nodes.getNode({ id: (await s.vms.getVM({ id })).status!.nodeId })).hostname;
    assert.equal(rows(started.out)[1]![rows(started.out)[0]!.indexOf("NODE")], placedOn);
    assert.equal((await s.vms.getVM({ id })).status?.state, State.RUNNING);
    const stopped = ok(await q(["vm", "stop", "cli-one", "--force", "--wait", "--timeout", "20s", "-o", "json"]));
    assert.equal((JSON.parse(stopped.out) as { status: { state: string } }[])[0]!.status.state, "STOPPED");
    assert.equal((await s.vms.getVM({ id })).status?.state, State.STOPPED);

    const deleted = ok(await q(["vm", "delete", id.slice(0, 10), "--wait", "--timeout", "20s"]));
    assert.match(deleted.out, new RegExp(`deleted VM cli-one \\(${id}\\)`));
    await assert.rejects(s.vms.getVM({ id }), (e: ConnectError) => e.code === Code.NotFound);
  });

  it("names resolve per project; an ambiguous name or id prefix lists the candidates (exit 4); an unknown name exits 3", async () => {
    const projects = createClient(ProjectService, s.transport);
    const other = await projects.createProject({ name: "cli-other" });
    const a = await s.vms.createVM({ name: "twin", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
    const b = await s.vms.createVM({ name: "twin", projectId: other.id, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
    const amb = await q(["vm", "show", "twin"]);
    assert.equal(amb.code, 4);
    assert.match(amb.err, /^Error: the VM name 'twin' is ambiguous: 2 have it; name one by id\n/);
    assert.match(amb.err, new RegExp(`  ${a.id}  twin`));
    assert.match(amb.err, new RegExp(`  ${b.id}  twin`));
    // In a project (by its name), the name is one VM.
    assert.equal((JSON.parse(ok(await q(["vm", "show", "twin", "-p", "cli-other", "-o", "json"])).out) as { id: string }).id, b.id);
    assert.equal((JSON.parse(ok(await q(["vm", "show", "twin", "-o", "json"], { env: { QUANTIX_PROJECT: other.id } })).out) as { id: string }).id, b.id);
    // The list of a project shows only its VMs.
    const inOther = JSON.parse(ok(await q(["vm", "list", "--project", "cli-other", "-o", "json"])).out) as { id: string }[];
    assert.deepEqual(inOther.map((v) => v.id), [b.id]);

    // An id prefix two VMs share: make VMs until two ids start alike.
    const made = [a.id, b.id];
    let shared: string | undefined;
    for (let i = 0; !shared && i < 40; i++) {
      const vm = await s.vms.createVM({ name: `amb-${i}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
      shared = made.find((x) => x[0] === vm.id[0])?.[0];
      made.push(vm.id);
    }
    assert.ok(shared, "two ids share a first character");
    const prefix = await q(["vm", "show", shared]);
    assert.equal(prefix.code, 4);
    assert.match(prefix.err, new RegExp(`^Error: the VM id prefix '${shared}' is ambiguous: \\d+ ids start with it\\n`));

    const unknown = await q(["vm", "start", "no-such-vm"]);
    assert.equal(unknown.code, 3);
    assert.equal(unknown.err, "Error: no VM named 'no-such-vm' (nor with that id or id prefix)\n");
    assert.equal(unknown.out, "");
    for (const id of made) await s.vms.deleteVM({ id });
  });

  it("bad input: an unknown flag or command exits 2 in one line; the server's field violations one a line", async () => {
    const flag = await q(["vm", "list", "--bogus"]);
    assert.equal(flag.code, 2);
    assert.equal(flag.err, "Error: unknown option '--bogus'\n");
    const cmd = await q(["vm", "lst"]);
    assert.equal(cmd.code, 2);
    assert.equal(cmd.err.trim().split("\n").length, 1, cmd.err);
    assert.match(cmd.err, /^Error: unknown command 'lst' \(did you mean/);
    const size = await q(["vm", "create", "x", "--memory", "lots"]);
    assert.equal(size.code, 2);
    assert.match(size.err, /^Error: --memory: 'lots' is not a size/);
    // A bad number given to an action's own flag is a usage error too (exit 2, not 1).
    const interval = await q(["vm", "metrics", "web-server-01", "--interval", "soon"]);
    assert.equal(interval.code, 2);
    assert.equal(interval.err, "Error: --interval 'soon' is not a positive whole number\n");
    const tail = await q(["vm", "console", "web-server-01", "--tail", "-1"]);
    assert.equal(tail.code, 2);
    assert.equal(tail.err, "Error: --tail '-1' is not a whole number\n");
    const invalid = await q(["vm", "create", "bad-mem", "--from-file", vmFile, "--memory", "1MiB"]);
    assert.equal(invalid.code, 2);
    const lines = invalid.err.trim().split("\n");
    assert.match(lines[0]!, /^Error: INVALID_ARGUMENT: /);
    assert.ok(lines.slice(1).some((l) => /^ {2}spec\.memory\.size_mib: must be between 256/.test(l)), invalid.err);
    const badFile = join(dir, "bad.yaml");
    await writeFile(badFile, "spec:\n  cpu: {cores: many}\n");
    const file = await q(["vm", "create", "x", "--from-file", badFile]);
    assert.equal(file.code, 2);
    assert.match(file.err, /^Error: .*bad\.yaml: .*cores/);
  });

  it("--watch on list prints a row for a VM another client creates; -o yaml, wide and name", async () => {
    const ac = new AbortController();
    let live: () => string = () => "";
    const watching = q(["vm", "list", "--watch"], { signal: ac.signal, live: (o) => (live = o) });
    await until(() => (live().includes("NAME") ? true : undefined), "the first table");
    const vm = await s.vms.createVM({ name: "watched-one", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
    await until(() => (live().includes("watched-one") ? true : undefined), "the watched VM's row");
    await s.vms.deleteVM({ id: vm.id });
    await until(() => (/watched-one.*\(deleted\)/.test(live()) ? true : undefined), "the deleted row").catch((e: Error) => {
      throw new Error(`${e.message}\n${live()}`);
    });
    ac.abort();
    assert.equal((await watching).code, 0);

    const yaml = parseYaml(ok(await q(["node", "list", "-o", "yaml"])).out) as { id: string; hostname: string }[];
    const apiNodes = (await s.nodes.listNodes({})).nodes;
    assert.deepEqual(yaml.map((n) => n.hostname).sort(), apiNodes.map((n) => n.hostname).sort());
    const names = ok(await q(["node", "list", "-o", "name"])).out.trim().split("\n");
    assert.deepEqual(names.sort(), apiNodes.map((n) => n.hostname).sort());
    const wide = rows(ok(await q(["node", "list", "-o", "wide"])).out);
    assert.ok(wide[0]!.includes("HYPERVISOR"), wide[0]!.join("|"));
    assert.ok(wide.slice(1).every((r) => r[0]!.length === 36), "full ids in wide output");
    const bad = await q(["node", "list", "-o", "xml"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /-o xml: choose one of table, wide, json, yaml, name/);
  });
});

describe("node", () => {
  it("disable, enable, and drain --force (the simulated host cannot live-migrate: its VM is stopped)", async () => {
    const node = (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === "hypervisor-02")!;
    const disabled = ok(await q(["node", "disable", "hypervisor-02"]));
    assert.equal(rows(disabled.out)[1]![3], "no");
    assert.equal((await s.nodes.getNode({ id: node.id })).spec?.schedulable, false);
    ok(await q(["node", "enable", node.id]));
    assert.equal((await s.nodes.getNode({ id: node.id })).spec?.schedulable, true);

    const before = (await s.nodes.getNode({ id: node.id })).status?.vmIds.length ?? 0;
    assert.ok(before > 0, "the demo has a VM on hypervisor-02");
    const drained = ok(await q(["node", "drain", "hypervisor-02", "--force", "--grace", "1"]));
    assert.match(drained.out, new RegExp(`drained node hypervisor-02: 0 VMs moved, ${before} stopped, 0 could not move`));
    const after = await s.nodes.getNode({ id: node.id });
    assert.equal(after.spec?.schedulable, false);
    const shown = JSON.parse(ok(await q(["node", "show", "hypervisor-02", "-o", "json"])).out) as { spec: { schedulable?: boolean }; status: { drain: { phase: string } } };
    assert.equal(shown.status.drain.phase, "PHASE_COMPLETED");
    ok(await q(["node", "enable", "hypervisor-02"]));
  });

  it("drain without --force reports the VMs that cannot move and exits 7", async () => {
    const r = await q(["node", "drain", "hypervisor-01"]);
    assert.equal(r.code, 7, r.err);
    assert.match(r.out, /could not move\n {2}[0-9a-f-]{36}: .*live-migration/);
    assert.match(r.err, /^Error: the drain is incomplete/);
    ok(await q(["node", "enable", "hypervisor-01"]));
  });
});

describe("storage, network, identity", () => {
  it("pool create --wait, volume create --wait, resize, list as JSON, delete", async () => {
    const pool = ok(await q(["pool", "create", "cli-pool", "--type", "local-dir", "--node", "hypervisor-03", "--wait", "--timeout", "20s"]));
    assert.equal(rows(pool.out)[1]![3], "READY");
    const vol = ok(await q(["volume", "create", "cli-vol", "--size", "1GiB", "--pool", "cli-pool", "--wait", "--timeout", "20s"]));
    assert.equal(rows(vol.out)[1]![2], "AVAILABLE");
    const listed = JSON.parse(ok(await q(["volume", "list", "-o", "json"])).out) as { id: string; name: string; spec: { sizeGib: string } }[];
    const mine = listed.find((v) => v.name === "cli-vol")!;
    assert.equal(mine.spec.sizeGib, "1");
    const api = await createClient(VolumeService, s.transport).getVolume({ id: mine.id });
    assert.equal(api.name, "cli-vol");
    const grown = ok(await q(["volume", "resize", "cli-vol", "2GiB", "--wait", "--timeout", "20s"]));
    assert.equal(rows(grown.out)[1]![3], "2.0GiB");
    ok(await q(["volume", "delete", "cli-vol", "--wait", "--timeout", "20s"]));
    ok(await q(["pool", "delete", "cli-pool"]));
  });

  it("network create, show as YAML, list, delete", async () => {
    ok(await q(["network", "create", "cli-net", "--type", "isolated", "--cidr", "10.77.0.0/24"]));
    const shown = parseYaml(ok(await q(["network", "show", "cli-net", "-o", "yaml"])).out) as { id: string; spec: { cidr: string; type: string } };
    assert.equal(shown.spec.cidr, "10.77.0.0/24");
    assert.equal(shown.spec.type, "NETWORK_TYPE_ISOLATED");
    const api = await createClient(VirtualNetworkService, s.transport).getVirtualNetwork({ id: shown.id });
    assert.equal(api.spec?.cidr, "10.77.0.0/24");
    assert.ok(rows(ok(await q(["network", "list"])).out).some((r) => r[1] === "cli-net" && r[3] === "10.77.0.0/24"));
    ok(await q(["network", "delete", "cli-net"]));
  });

  it("project create, user create --password-stdin, role set and list", async () => {
    ok(await q(["project", "create", "cli-team"]));
    ok(await q(["user", "create", "carol", "--password-stdin"], { stdin: "a long passphrase 123\n" }));
    ok(await q(["project", "role", "set", "cli-team", "member", "--user", "carol"]));
    const bindings = JSON.parse(ok(await q(["project", "role", "list", "cli-team", "-o", "json"])).out) as { principalType: string; role: string }[];
    assert.deepEqual(bindings.map((b) => [b.principalType, b.role]), [["PRINCIPAL_TYPE_USER", "ROLE_MEMBER"]]);
    const users = rows(ok(await q(["user", "list"])).out);
    assert.ok(users.some((r) => r[1] === "carol"));
  });
});

describe("security groups, quotas, service accounts and tokens", () => {
  it("security-group create, rule add (tcp 22, 8000-8080) and remove, as tables and as JSON", async () => {
    ok(await q(["security-group", "create", "cli-web"]));
    const added = rows(ok(await q(["sg", "rule", "add", "cli-web", "--protocol", "tcp", "--port", "8000-8080", "--remote-cidr", "10.0.0.0/8"])).out);
    assert.ok(added.some((r) => r[1] === "INGRESS" && r[3] === "TCP" && r[4] === "8000-8080" && r[5] === "10.0.0.0/8"), added.map((r) => r.join("|")).join("\n"));
    const rules = JSON.parse(ok(await q(["sg", "rule", "list", "cli-web", "-o", "json"])).out) as { id: string; portRangeMin?: number; protocol?: string }[];
    const mine = rules.find((r) => r.portRangeMin === 8000)!;
    assert.equal(mine.protocol, "SECURITY_GROUP_RULE_PROTOCOL_TCP");
    ok(await q(["sg", "rule", "remove", "cli-web", mine.id]));
    const after = JSON.parse(ok(await q(["sg", "show", "cli-web", "-o", "json"])).out) as { rules: { id: string }[] };
    assert.ok(!after.rules.some((r) => r.id === mine.id));
    const bad = await q(["sg", "rule", "add", "cli-web", "--port", "http"]);
    assert.equal(bad.code, 2);
    assert.equal(bad.err, "Error: --port 'http' must be a port (22) or a range (8000-8080)\n");
    ok(await q(["sg", "delete", "cli-web"]));
  });

  it("quota set and show; a service account's token, shown once, authenticates as it", async () => {
    ok(await q(["project", "create", "cli-quota"]));
    const set = ok(await q(["quota", "set", "cli-quota", "--vms", "7", "--memory", "8GiB"])).out;
    assert.match(set, /^PROJECT +VMS +VCPUS +MEMORY/);
    assert.match(set, /\n[0-9a-f-]{36} +7 +8\.0GiB/, "VMS 7, VCPUS empty, MEMORY 8.0GiB");
    const shown = JSON.parse(ok(await q(["quota", "show", "cli-quota", "-o", "json"])).out) as { limits: { vms: string; memoryMib: string } };
    assert.deepEqual([shown.limits.vms, shown.limits.memoryMib], ["7", "8192"]);

    ok(await q(["service-account", "create", "cli-bot"]));
    ok(await q(["project", "role", "set", "cli-quota", "member", "--service-account", "cli-bot"]));
    const made = ok(await q(["token", "create", "cli-ci", "--service-account", "cli-bot", "--role", "member", "-p", "cli-quota"]));
    const secret = /secret \(shown once\): (\S+)/.exec(made.out)?.[1];
    assert.ok(secret, made.out);
    const who = ok(await q(["whoami"], { env: { QUANTIX_TOKEN: secret } }));
    assert.match(who.out, /cli-bot/);
    const tokens = JSON.parse(ok(await q(["token", "list", "-o", "json"])).out) as { name: string }[];
    assert.ok(tokens.some((t) => t.name === "cli-ci"));
    ok(await q(["token", "revoke", "cli-ci"]));
    assert.equal((await q(["whoami"], { env: { QUANTIX_TOKEN: secret } })).code, 5);
  });
});

describe("config, contexts, login", () => {
  it("with nothing configured the URL is http://127.0.0.1:8080; flags beat the environment, which beats the context", () => {
    const cfg = { currentContext: "a", contexts: { a: { url: "http://ctx:1", project: "p-ctx" } } };
    assert.equal(DEFAULT_URL, "http://127.0.0.1:8080");
    assert.equal(resolveConnection({ currentContext: "default", contexts: {} }, {}, {}).url, DEFAULT_URL);
    assert.equal(resolveConnection(cfg, {}, {}).url, "http://ctx:1");
    assert.equal(resolveConnection(cfg, { QUANTIX_URL: "http://env:2" }, {}).url, "http://env:2");
    assert.equal(resolveConnection(cfg, { QUANTIX_URL: "http://env:2" }, { url: "http://flag:3" }).url, "http://flag:3");
    assert.equal(resolveConnection(cfg, { QUANTIX_PROJECT: "p-env" }, {}).project, "p-env");
    assert.throws(() => resolveConnection(cfg, { QUANTIX_CONTEXT: "nope" }, {}), /no context named 'nope'/);
  });

  it("context add/use/list/show/remove; the config file is 0600 in a 0700 directory; QUANTIX_CONTEXT and --url override", async () => {
    const env = { QUANTIX_URL: undefined };
    ok(await q(["context", "add", "live", "--url", s.url, "--project", "default", "--use"], { env }));
    ok(await q(["context", "add", "dead", "--url", "http://127.0.0.1:1"], { env }));
    assert.equal((await stat(cfgPath)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, "conf", "quantix"))).mode & 0o777, 0o700);
    const list = rows(ok(await q(["context", "list"], { env })).out);
    assert.deepEqual(list.slice(1).map((r) => r.join(" ")).sort(), [`* live ${s.url} default`, `dead http://127.0.0.1:1`].sort());
    ok(await q(["vm", "list"], { env }));
    const down = await q(["vm", "list"], { env: { ...env, QUANTIX_CONTEXT: "dead" } });
    assert.equal(down.code, 6);
    assert.match(down.err, /^Error: cannot reach the control plane at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\): is the control plane running\? Start it with 'npm start'/);
    ok(await q(["vm", "list", "--url", s.url], { env: { ...env, QUANTIX_CONTEXT: "dead" } }));
    ok(await q(["context", "use", "dead"], { env }));
    assert.equal((await q(["node", "list"], { env })).code, 6);
    ok(await q(["node", "list", "--context", "live"], { env }));
    const yaml = parseYaml(await readFile(cfgPath, "utf8")) as { "current-context": string; contexts: Record<string, { url: string }> };
    assert.equal(yaml["current-context"], "dead");
    assert.equal(yaml.contexts["live"]!.url, s.url);
    ok(await q(["context", "remove", "dead"], { env }));
    ok(await q(["context", "remove", "live"], { env }));
  });

  it("login against a control plane that asks for tokens keeps the token in the context; logout forgets it", async () => {
    const locked = await startTestServer({ localTrust: false, demo: false });
    try {
      const env = { QUANTIX_URL: undefined };
      ok(await q(["context", "add", "locked", "--url", locked.url, "--use"], { env }));
      const anon = await q(["vm", "list"], { env });
      assert.equal(anon.code, 5);
      assert.match(anon.err, /^Error: UNAUTHENTICATED: /);
      const bad = await q(["login", "--username", "admin", "--password-stdin"], { env, stdin: "wrong password\n" });
      assert.equal(bad.code, 5, bad.err);
      const login = ok(await q(["login", "--username", "admin", "--password-stdin"], { env, stdin: `${TEST_ADMIN_PASSWORD}\n` }));
      assert.match(login.out, /logged in to .* as admin \(context locked\)/);
      assert.equal((await stat(cfgPath)).mode & 0o777, 0o600);
      const conf = parseYaml(await readFile(cfgPath, "utf8")) as { contexts: Record<string, { token?: string }> };
      assert.ok((conf.contexts["locked"]!.token ?? "").length > 20);
      ok(await q(["vm", "list"], { env }));
      assert.match(ok(await q(["whoami"], { env })).out, /admin/);
      assert.match(ok(await q(["context", "show"], { env })).out, /token: \(set\)/);
      ok(await q(["logout"], { env }));
      assert.equal((await q(["vm", "list"], { env })).code, 5);
      ok(await q(["context", "remove", "locked"], { env }));
    } finally {
      await locked.close();
    }
  });
});

describe("on an agent's node: logs, metrics, show --watch; image upload", () => {
  let agent: TestAgent<SimulatedBackend>;
  const nodeName = `cli-agent-${process.pid}`;
  let vmId: string;
  before(async () => {
    // A kernel file in the agent's image directory: the simulated backend checks the VM's files as QEMU would.
    await mkdir(join(dir, "agent", "images"), { recursive: true });
    await writeFile(join(dir, "agent", "images", "vmlinuz"), "kernel");
    agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 50 }), join(dir, "agent"), nodeName, 100);
    await agent.start(s.url);
    const nodeId = await until(async () => {
      const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === nodeName);
      return n?.status?.phase === Phase.READY && s.cp.agents?.get(n.id) ? n.id : undefined;
    }, "the agent's node READY");
    const vm = await s.vms.createVM({ name: "cli-agent-vm", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: join(dir, "agent", "images", "vmlinuz") } } }, nodeId });
    vmId = vm.id;
  });
  after(async () => {
    await agent.stop().catch(() => undefined);
    await agent.backend.close();
  });

  it("vm show --watch prints a row per change another client makes; logs prints the console as text; metrics one sample", async () => {
    const ac = new AbortController();
    let live: () => string = () => "";
    const watching = q(["vm", "show", "cli-agent-vm", "--watch"], { signal: ac.signal, live: (o) => (live = o) });
    await until(() => (/cli-agent-vm +STOPPED/.test(live()) ? true : undefined), "the first row");
    await s.vms.startVM({ id: vmId });
    await until(() => (/cli-agent-vm +RUNNING/.test(live()) ? true : undefined), "the RUNNING row").catch((e: Error) => {
      throw new Error(`${e.message}\n${live()}`);
    });
    ac.abort();
    assert.equal((await watching).code, 0);
    assert.ok(!/other|web-server/.test(live()), "only this VM's rows");

    const logs = await until(async () => {
      const r = ok(await q(["vm", "logs", "cli-agent-vm"]));
      return r.out.includes(`simulated console: booted ${vmId}`) ? r : undefined;
    }, "the boot line in the console");
    assert.ok(!logs.out.startsWith("{"), "text, not JSON");
    const tail = ok(await q(["vm", "logs", "cli-agent-vm", "--tail", "10"]));
    assert.ok(Buffer.byteLength(tail.out) <= 10, tail.out);

    const metrics = ok(await q(["vm", "metrics", "cli-agent-vm"]));
    const [head, row] = rows(metrics.out);
    assert.deepEqual(head!.slice(0, 3), ["TIME", "CPU%", "MEMORY MIB"]);
    assert.match(row![0]!, /^\d{4}-\d\d-\d\dT/);
    const sample = JSON.parse(ok(await q(["vm", "metrics", "cli-agent-vm", "-o", "json"])).out.trim()) as { sampledAt: string };
    assert.ok(sample.sampledAt);
    ok(await q(["vm", "stop", "cli-agent-vm", "--force", "--wait", "--timeout", "20s"]));
    ok(await q(["vm", "delete", "cli-agent-vm", "--wait", "--timeout", "20s"]));
  });

  it("image upload streams a file with its size (HTTP/2), and the image is AVAILABLE", async () => {
    ok(await q(["pool", "create", "cli-images", "--type", "local-dir", "--node", "hypervisor-01", "--wait", "--timeout", "20s"]));
    const file = join(dir, "disk.raw");
    await writeFile(file, Buffer.alloc(1 << 20));
    const up = ok(await q(["image", "upload", "cli-disk", file, "--format", "raw", "--pool", "cli-images"]));
    const [, row] = rows(up.out);
    assert.equal(row![1], "cli-disk");
    assert.equal(row![2], "AVAILABLE");
    const listed = JSON.parse(ok(await q(["image", "list", "-o", "json"])).out) as { id: string; name: string }[];
    const img = listed.find((i) => i.name === "cli-disk")!;
    const api = await createClient(ImageService, s.transport).getImage({ id: img.id });
    assert.equal(api.status?.sourceBytes, 1n << 20n);
  });
  it("vm create --image --network --cloud-init --node --label resolve names and build the spec", async () => {
    ok(await q(["network", "create", "cli-vm-net", "--type", "isolated", "--cidr", "10.78.0.0/24"]));
    const userData = join(dir, "user-data.yaml");
    await writeFile(userData, "#cloud-config\nhostname: from-cli\n");
    const made = JSON.parse(
      ok(await q(["vm", "create", "cli-flags", "--cpus", "2", "--memory", "4GiB", "--image", "cli-disk", "--disk-size", "3", "--network", "cli-vm-net", "--cloud-init", userData, "--node", "hypervisor-03", "-l", "a=b", "-o", "json"])).out,
    ) as { id: string }[];
    const vm = await s.vms.getVM({ id: made[0]!.id });
    const image = JSON.parse(ok(await q(["image", "show", "cli-disk", "-o", "json"])).out) as { id: string };
    const net = JSON.parse(ok(await q(["network", "show", "cli-vm-net", "-o", "json"])).out) as { id: string };
    assert.equal(vm.spec?.cpu?.cores, 2);
    assert.equal(vm.spec?.memory?.sizeMib, 4096n);
    assert.deepEqual(vm.spec?.disks.map((d) => [d.id, d.imageId, d.sizeGib]), [["root", image.id, 3n]]);
    assert.deepEqual(vm.spec?.nics.map((n) => [n.id, n.networkId]), [["eth0", net.id]]);
    assert.equal(vm.spec?.provisioning?.cloudInit?.userData, "#cloud-config\nhostname: from-cli\n");
    assert.deepEqual(vm.labels, { a: "b" });
    const missing = await q(["vm", "create", "cli-flags-2", "--image", "no-such-image"]);
    assert.equal(missing.code, 3);
    assert.equal(missing.err, "Error: no image named 'no-such-image' (nor with that id or id prefix)\n");
    await s.vms.deleteVM({ id: vm.id });
  });
});

describe("TLS", () => {
  it("an https context with its ca-file logs in and lists; without the CA, one line saying the certificate is not trusted", async () => {
    const pki = await createTestPki();
    const tlsDir = join(dir, "tls");
    await mkdir(tlsDir, { recursive: true });
    await writeFile(join(tlsDir, "server.crt"), pki.server.certPem);
    await writeFile(join(tlsDir, "server.key"), pki.server.keyPem);
    await writeFile(join(tlsDir, "ca.crt"), pki.ca.certPem);
    const secure = await startTestServer({ demo: false, tls: { certFile: join(tlsDir, "server.crt"), keyFile: join(tlsDir, "server.key"), clientCaFile: undefined } }, undefined, pki.ca.certPem);
    try {
      assert.match(secure.url, /^https:/);
      const env = { QUANTIX_URL: undefined };
      ok(await q(["context", "add", "secure", "--url", secure.url, "--use"], { env }));
      const untrusted = await q(["vm", "list"], { env });
      assert.equal(untrusted.code, 6);
      assert.match(untrusted.err, /^Error: the control plane at https:\/\/\S+ has a certificate this client does not trust \(\w+\): give its CA with 'quantix context add NAME --url \S+ --ca-file ca.crt'\n$/);
      ok(await q(["context", "add", "secure", "--ca-file", join(tlsDir, "ca.crt")], { env }));
      assert.equal((await q(["vm", "list"], { env })).code, 5, "tokens required over TLS");
      ok(await q(["login", "--password-stdin"], { env, stdin: `${TEST_ADMIN_PASSWORD}\n` }));
      assert.match(ok(await q(["vm", "list"], { env })).out, /No VMs found\./);
      ok(await q(["context", "remove", "secure"], { env }));
    } finally {
      await secure.close();
    }
  });
});
