import { open as openFile, stat } from "node:fs/promises";
import { create, type Message } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { SingleBar } from "cli-progress";
import { Command } from "commander";
import { attachConsole, DEFAULT_ESCAPE, DEFAULT_TAIL_BYTES, escapeByte } from "./console-attach.js";
import { CliError, describeError, EXIT, ExitStatus, UsageError } from "./errors.js";
import { write } from "./io.js";
import { cellText, dataText, jsonOf, table } from "./output.js";
import { enumName, method, nonNegativeInt, parseGib, parseMib, positiveInt, resourceByName, setPath, type Json } from "./resources.js";
import { addFlags, applyFlags, flagContext, fromFile, NAME_ARG, printList, printOne, requestOf, waitFor, type Runtime } from "./resource-commands.js";

const R = (name: string) => resourceByName(name)!;

/** A progress bar on a terminal's stderr; nothing when stderr is not a terminal (logs, tests). */
function progressBar(rt: Runtime, format: string): { start(total: number, value: number, payload?: object): void; update(value: number, payload?: object): void; setTotal(t: number): void; stop(): void } {
  const tty = (rt.io.stderr as { isTTY?: boolean }).isTTY === true;
  if (!tty) return { start: () => undefined, update: () => undefined, setTotal: () => undefined, stop: () => undefined };
  const bar = new SingleBar({ format, stream: rt.io.stderr as NodeJS.WritableStream, hideCursor: true, clearOnComplete: false, etaBuffer: 20 });
  return { start: (t, v, p) => bar.start(t, v, p), update: (v, p) => bar.update(v, p), setTotal: (t) => bar.setTotal(t), stop: () => bar.stop() };
}

/** vm logs, vm metrics. */
export function addVmExtras(rt: Runtime, vm: Command): void {
  const r = R("vm");
  const logs = vm
    .command("logs")
    .description("the VM's serial console output as text")
    .argument("<ref>", "the VM")
    .option("--tail <bytes>", "only the last bytes")
    .option("-f, --follow", "keep printing new output")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const tail = opts["tail"] ? positiveInt(String(opts["tail"]), "--tail") : 0;
      const res = (await s.call(r, "getConsoleOutput", { vmId: id, tailBytes: tail })) as unknown as { data: Uint8Array; truncated: boolean };
      rt.io.stdout.write(Buffer.from(res.data));
      if (!opts["follow"]) return;
      try {
        for await (const chunk of s.stream(r, "streamConsole", { vmId: id }, rt.io.signal)) rt.io.stdout.write(Buffer.from((chunk as unknown as { data: Uint8Array }).data));
      } catch (err) {
        if (!rt.io.signal?.aborted) throw err;
      }
    });
  NAME_ARG.set(logs, "vm");
  const metrics = vm
    .command("metrics")
    .description("the VM's resource usage: one sample, or --watch for a sample every interval")
    .argument("<ref>", "the VM")
    .option("-w, --watch", "keep printing samples")
    .option("--interval <seconds>", "seconds between samples (default 2)")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const interval = opts["interval"] ? positiveInt(String(opts["interval"]), "--interval") : 2;
      const ac = new AbortController();
      rt.io.signal?.addEventListener("abort", () => ac.abort());
      const m = method(r, "streamMetrics");
      const head = ["TIME", "CPU%", "MEMORY MIB", "DISK READ", "DISK WRITE", "NET RX", "NET TX"];
      let first = true;
      try {
        for await (const u of s.stream(r, "streamMetrics", { vmId: id, intervalSec: interval }, ac.signal)) {
          const f = rt.output();
          if (f === "json" || f === "yaml") write(rt.io.stdout, f === "json" ? JSON.stringify(jsonOf(m.output, u)) : `---\n${dataText("yaml", jsonOf(m.output, u))}`);
          else {
            const o = u as unknown as { cpuUsagePercent: number; memoryUsedMib: bigint; diskReadBytes: bigint; diskWriteBytes: bigint; networkRxBytes: bigint; networkTxBytes: bigint; sampledAt?: never };
            const row = [o.sampledAt ? new Date(timestampMs(o.sampledAt)).toISOString() : "", o.cpuUsagePercent.toFixed(1), String(o.memoryUsedMib), String(o.diskReadBytes), String(o.diskWriteBytes), String(o.networkRxBytes), String(o.networkTxBytes)];
            const widths = [27, 8, 12, 14, 14, 14, 14];
            const text = table(first ? head : head.map(() => ""), [row], widths).split("\n").filter((l) => l.trim() !== "").join("\n");
            write(rt.io.stdout, text);
          }
          first = false;
          if (!opts["watch"]) break;
        }
      } catch (err) {
        if (!rt.io.signal?.aborted) throw err;
      } finally {
        ac.abort();
      }
    });
  NAME_ARG.set(metrics, "vm");
}

/** vm migrate: MigrateVM (live; it answers when the move is done), with a progress bar from the VM's Migration. */
export function addVmMigrate(rt: Runtime, vm: Command): void {
  const r = R("vm");
  const mig = R("migration");
  const cmd = vm
    .command("migrate")
    .description("move a running VM live to another node (default: the scheduler's choice)")
    .argument("<ref>", "the VM")
    .option("--to <node>", "the target node")
    .option("--bandwidth <mbps>", "bandwidth limit in Mbit/s")
    .option("--max-downtime <ms>", "the most the guest may pause at the switch-over")
    .option("--wait", "accepted for uniformity: this command always waits for the outcome")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const req: Json = { vmId: id, live: true };
      if (opts["to"]) req["targetNodeId"] = await s.resolve(R("node"), String(opts["to"]));
      if (opts["bandwidth"]) req["bandwidthMbps"] = positiveInt(String(opts["bandwidth"]), "--bandwidth");
      if (opts["maxDowntime"]) req["maxDowntimeMs"] = positiveInt(String(opts["maxDowntime"]), "--max-downtime");
      const bar = progressBar(rt, "migrating {vm} [{bar}] {percentage}% | {phase}");
      bar.start(100, 0, { vm: ref, phase: "PENDING" });
      const ac = new AbortController();
      const migrationSchema = method(mig, "getMigration").output;
      const follow = (async () => {
        while (!ac.signal.aborted) {
          try {
            const { items } = await s.listAll(mig, { vmId: id }, ac.signal);
            const cur = items.at(-1) as unknown as { status?: { transferredBytes: bigint; totalBytes: bigint } } | undefined;
            if (cur?.status) {
              const pct = cur.status.totalBytes > 0n ? Number((cur.status.transferredBytes * 100n) / cur.status.totalBytes) : 0;
              bar.update(Math.min(100, pct), { phase: cellText(migrationSchema, cur as unknown as Message, { header: "", path: "status.phase" }) });
            }
          } catch {
            return;
          }
          await new Promise((res) => setTimeout(res, 300));
        }
      })();
      let res: Message;
      try {
        res = await s.call(r, "migrateVM", requestOf(method(r, "migrateVM").input, req, "the request"), rt.io.signal);
        bar.update(100, { phase: "SUCCEEDED" });
      } finally {
        ac.abort();
        await follow;
        bar.stop();
      }
      const o = res as unknown as { vm?: Message; stats?: { bytesTransferred: bigint; downtimeMs: bigint; durationMs: bigint } };
      const f = rt.output();
      if (f === "json" || f === "yaml") return write(rt.io.stdout, dataText(f, jsonOf(method(r, "migrateVM").output, res)));
      if (o.stats) write(rt.io.stderr, `migrated in ${o.stats.durationMs} ms (${o.stats.bytesTransferred} bytes, ${o.stats.downtimeMs} ms downtime)`);
      if (o.vm) printList(rt, r, [o.vm]);
    });
  NAME_ARG.set(cmd, "vm");
}

/** node drain, with a progress bar from the node's drain status. */
export function addNodeExtras(rt: Runtime, node: Command): void {
  const r = R("node");
  const drain = node
    .command("drain")
    .description("make a node unschedulable and move its VMs off (live migration for running VMs)")
    .argument("<ref>", "the node")
    .option("--to <node>", "the target node (default: the scheduler's choice)")
    .option("--force", "stop the VMs that cannot move")
    .option("--grace <seconds>", "with --force: how long a VM may take to shut down")
    .option("--wait", "accepted for uniformity: this command always waits for the outcome")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const req: Json = { id };
      if (opts["to"]) req["targetNodeId"] = await s.resolve(r, String(opts["to"]));
      if (opts["force"]) req["force"] = true;
      if (opts["grace"]) req["gracePeriodSec"] = positiveInt(String(opts["grace"]), "--grace");
      const bar = progressBar(rt, "draining {node} [{bar}] {value}/{total} VMs | {phase}");
      const before = await s.call(r, "getNode", { id });
      const total = cellText(r.service.method["getNode"]!.output, before, { header: "", path: "status.vmIds", format: "count" });
      bar.start(Math.max(1, Number(total)), 0, { node: (before as unknown as Json)["hostname"], phase: "RUNNING" });
      const ac = new AbortController();
      const progress = (async () => {
        for (;;) {
          if (ac.signal.aborted) return;
          try {
            const n = (await s.call(r, "getNode", { id }, ac.signal)) as unknown as { status?: { drain?: { migratedVmIds: string[]; stoppedVmIds: string[]; failures: unknown[]; remainingVmIds: string[] } } };
            const d = n.status?.drain;
            if (d) {
              const done = d.migratedVmIds.length + d.stoppedVmIds.length + d.failures.length;
              bar.setTotal(Math.max(1, done + d.remainingVmIds.length));
              bar.update(done, { phase: d.remainingVmIds.length ? "RUNNING" : "finishing" });
            }
          } catch {
            return;
          }
          await new Promise((res) => setTimeout(res, 300));
        }
      })();
      let res: Message;
      try {
        res = await s.call(r, "drainNode", req, rt.io.signal);
        const d = res as unknown as { migratedVmIds: string[]; stoppedVmIds: string[]; failures: unknown[] };
        const done = d.migratedVmIds.length + d.stoppedVmIds.length + d.failures.length;
        bar.setTotal(Math.max(1, done));
        bar.update(done, { phase: d.failures.length ? "INCOMPLETE" : "COMPLETED" });
      } finally {
        ac.abort();
        await progress;
        bar.stop();
      }
      const o = res as unknown as { node?: Message; migratedVmIds: string[]; stoppedVmIds: string[]; failures: { vmId: string; reason?: string; message?: string }[] };
      const f = rt.output();
      if (f === "json" || f === "yaml") return write(rt.io.stdout, dataText(f, jsonOf(method(r, "drainNode").output, res)));
      write(rt.io.stdout, `drained node ${(o.node as unknown as Json | undefined)?.["hostname"] ?? id}: ${o.migratedVmIds.length} VMs moved, ${o.stoppedVmIds.length} stopped, ${o.failures.length} could not move`);
      for (const fl of o.failures) write(rt.io.stdout, `  ${fl.vmId}: ${fl.message ?? fl.reason ?? ""}`);
      if (o.failures.length > 0) throw new CliError(`the drain is incomplete: ${o.failures.length} VMs could not move (run the drain again, or with --force)`, EXIT.WAIT);
    });
  NAME_ARG.set(drain, "node");
  const metrics = node
    .command("metrics")
    .description("a node's resource usage")
    .argument("<ref>", "the node")
    .action(async (ref: string) => {
      const s = rt.session();
      const res = await s.call(r, "getNodeMetrics", { id: await s.resolve(r, ref) });
      const f = rt.output();
      write(rt.io.stdout, dataText(f === "json" ? "json" : "yaml", jsonOf(method(r, "getNodeMetrics").output, res)));
    });
  NAME_ARG.set(metrics, "node");
}

/** image import (a progress bar from ImportImage's stream) and image upload. */
export function addImageExtras(rt: Runtime, image: Command): void {
  const r = R("image");
  const imp = image
    .command("import")
    .description("create an image from a URL and follow the import")
    .argument("[name]", "the image's name")
    .option("-f, --from-file <file>", "the CreateImageRequest as YAML or JSON")
    .option("--wait", "accepted for uniformity: this command always follows the import to its end");
  const createFlags = r.createFlags!;
  addFlags(imp, createFlags);
  imp.action(async (name: string | undefined, opts: Json) => {
    const s = rt.session();
    const req: Json = opts["fromFile"] ? await fromFile(String(opts["fromFile"])) : {};
    if (name) req["name"] = name;
    await applyFlags(req, createFlags, opts, flagContext(rt));
    const p = await s.projectId();
    if (p && req["projectId"] === undefined) req["projectId"] = p;
    const m = method(r, "importImage");
    const request = requestOf(m.input, { create: req }, opts["fromFile"] ? String(opts["fromFile"]) : "the request");
    const bar = progressBar(rt, "importing {name} [{bar}] {percentage}% | {state}");
    bar.start(100, 0, { name: req["name"], state: "QUEUED" });
    let last: Message | undefined;
    let lastState = "";
    try {
      for await (const u of s.stream(r, "importImage", request, rt.io.signal)) {
        const o = u as unknown as { progressPercent: number; message: string; image?: Message };
        lastState = cellText(m.output, u, { header: "", path: "state" });
        bar.update(Math.round(o.progressPercent), { state: lastState });
        if (o.image) last = o.image;
      }
    } finally {
      bar.stop();
    }
    if (!last) throw new CliError("the import ended without the image", EXIT.ERROR);
    if (lastState === "ERROR") throw new CliError(`the import failed: ${(last as unknown as { status?: { errorMessage: string } }).status?.errorMessage ?? ""}`, EXIT.WAIT);
    printList(rt, r, [last]);
  });
}

/** image upload NAME FILE: creates the image with an upload source, then streams the file (HTTP/2). */
export function addImageUpload(rt: Runtime, image: Command): void {
  const r = R("image");
  const up = image
    .command("upload")
    .description("create an image from a local file (raw, qcow2, iso...; gzip or xz too), with a progress bar")
    .argument("<name>", "the image's name")
    .argument("<file>", "the file to upload")
    .option("--format <format>", "disk format: qcow2, raw, iso... (default: detected)")
    .option("--sha256 <hex>", "the expected checksum")
    .option("--public", "visible to every project")
    .option("--pool <pool>", "the storage pool that keeps it (default: the default pool)")
    .option("--wait", "accepted for uniformity: this command always waits for the outcome")
    .option("--description <text>", "a description");
  up.action(async (name: string, file: string, opts: Json) => {
    const s = rt.session();
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch (err) {
      throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const req: Json = { name, spec: { source: { upload: { sizeBytes: String(size) } } } };
    if (opts["format"]) setPath(req, "spec.diskFormat", enumName("IMAGE_FORMAT_", String(opts["format"])));
    if (opts["sha256"]) setPath(req, "spec.source.expectedSha256", String(opts["sha256"]));
    if (opts["public"]) setPath(req, "spec.visibility", "IMAGE_VISIBILITY_PUBLIC");
    if (opts["description"]) req["description"] = opts["description"];
    if (opts["pool"]) setPath(req, "spec.poolId", await s.resolve(R("pool"), String(opts["pool"])));
    const p = await s.projectId();
    if (p) req["projectId"] = p;
    const created = await s.call(r, "createImage", requestOf(method(r, "createImage").input, req, "the request"));
    const id = String((created as unknown as Json)["id"]);
    const bar = progressBar(rt, "uploading {name} [{bar}] {percentage}% | {value}/{total} bytes");
    bar.start(Math.max(1, size), 0, { name });
    let sent = 0;
    const schema = method(r, "uploadImage").input;
    async function* messages() {
      yield create(schema, { content: { case: "header", value: { imageId: id, sizeBytes: BigInt(size) } } } as never);
      const fh = await openFile(file, "r");
      try {
        for await (const chunk of fh.createReadStream({ highWaterMark: 256 * 1024 })) {
          sent += (chunk as Buffer).length;
          bar.update(sent);
          yield create(schema, { content: { case: "chunk", value: chunk as Buffer } } as never);
        }
      } finally {
        await fh.close();
      }
    }
    let image: Message;
    try {
      image = (await (createClient(r.service, s.transportH2()) as unknown as Record<string, (m: AsyncIterable<unknown>, o: object) => Promise<Message>>)["uploadImage"]!(messages(), rt.io.signal ? { signal: rt.io.signal } : {}));
    } finally {
      bar.stop();
    }
    printList(rt, r, [image]);
  });
}

/** security-group rule add|remove|list. */
export function addSecurityGroupExtras(rt: Runtime, sg: Command): void {
  const r = R("security-group");
  const rule = sg.command("rule").description("a security group's rules");
  const add = rule
    .command("add")
    .description("add a rule")
    .argument("<group>", "the security group")
    .option("--direction <dir>", "ingress (default) or egress", "ingress")
    .option("--protocol <proto>", "tcp, udp, icmp, icmpv6 (default: any)")
    .option("--port <port>", "a port or a range: 22, 8000-8080")
    .option("--remote-cidr <cidr>", "from (ingress) or to (egress) these addresses")
    .option("--remote-group <sg>", "from the members of this security group")
    .option("--ethertype <type>", "ipv4 (default) or ipv6")
    .option("--description <text>", "what it is for")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const ruleJson: Json = { direction: enumName("SECURITY_GROUP_RULE_DIRECTION_", String(opts["direction"])) };
      if (opts["protocol"]) ruleJson["protocol"] = enumName("SECURITY_GROUP_RULE_PROTOCOL_", String(opts["protocol"]));
      if (opts["ethertype"]) ruleJson["ethertype"] = enumName("ETHER_TYPE_", String(opts["ethertype"]));
      if (opts["port"]) {
        const m = /^(\d+)(?:-(\d+))?$/.exec(String(opts["port"]));
        if (!m) throw new UsageError(`--port '${opts["port"]}' must be a port (22) or a range (8000-8080)`);
        ruleJson["portRangeMin"] = Number(m[1]);
        ruleJson["portRangeMax"] = Number(m[2] ?? m[1]);
      }
      if (opts["remoteCidr"]) ruleJson["remoteCidr"] = opts["remoteCidr"];
      if (opts["remoteGroup"]) ruleJson["remoteGroupId"] = await s.resolve(r, String(opts["remoteGroup"]));
      if (opts["description"]) ruleJson["description"] = opts["description"];
      const m = method(r, "addSecurityGroupRules");
      const res = await s.call(r, "addSecurityGroupRules", requestOf(m.input, { securityGroupId: id, rules: [ruleJson] }, "the rule"));
      printRules(rt, res);
    });
  NAME_ARG.set(add, "security-group");
  const remove = rule
    .command("remove")
    .alias("rm")
    .description("remove rules by id")
    .argument("<group>", "the security group")
    .argument("<rule-id...>", "the rules' ids")
    .action(async (ref: string, ruleIds: string[]) => {
      const s = rt.session();
      const res = await s.call(r, "removeSecurityGroupRules", { securityGroupId: await s.resolve(r, ref), ruleIds });
      printRules(rt, res);
    });
  NAME_ARG.set(remove, "security-group");
  const list = rule
    .command("list")
    .alias("ls")
    .description("list a group's rules")
    .argument("<group>", "the security group")
    .action(async (ref: string) => printRules(rt, await rt.session().fetch(r, ref)));
  NAME_ARG.set(list, "security-group");
}

function printRules(rt: Runtime, sg: Message): void {
  const r = R("security-group");
  const schema = r.service.method["getSecurityGroup"]!.output;
  const rulesField = schema.fields.find((f) => f.localName === "rules")!;
  if (rulesField.fieldKind !== "list" || rulesField.listKind !== "message") throw new Error("unreachable");
  const ruleSchema = rulesField.message;
  const rules = (sg as unknown as { rules: Message[] }).rules;
  const f = rt.output();
  if (f === "json" || f === "yaml") return write(rt.io.stdout, dataText(f, rules.map((x) => jsonOf(ruleSchema, x))));
  const cols = [
    { header: "ID", path: "id" },
    { header: "DIRECTION", path: "direction" },
    { header: "ETHERTYPE", path: "ethertype" },
    { header: "PROTOCOL", path: "protocol" },
    { header: "PORTS", path: "portRangeMin" },
    { header: "REMOTE", path: "remoteCidr" },
    { header: "DESCRIPTION", path: "description" },
  ];
  const rows = rules.map((x) => {
    const row = cols.map((c) => cellText(ruleSchema, x, c));
    const o = x as unknown as { portRangeMin: number; portRangeMax: number; remoteGroupId: string };
    row[4] = o.portRangeMin ? (o.portRangeMax && o.portRangeMax !== o.portRangeMin ? `${o.portRangeMin}-${o.portRangeMax}` : String(o.portRangeMin)) : "any";
    if (!row[5] && o.remoteGroupId) row[5] = `group ${o.remoteGroupId}`;
    return row;
  });
  write(rt.io.stdout, rules.length ? table(cols.map((c) => c.header), rows) : "No rules.");
}

/** project role list|set|remove. */
export function addProjectExtras(rt: Runtime, project: Command): void {
  const r = R("project");
  const role = project.command("role").description("who may do what in a project (role bindings)");
  const principal = async (opts: Json): Promise<{ principalType: string; principalId: string }> => {
    if (opts["user"]) return { principalType: "PRINCIPAL_TYPE_USER", principalId: await rt.session().resolve(R("user"), String(opts["user"])) };
    if (opts["serviceAccount"]) return { principalType: "PRINCIPAL_TYPE_SERVICE_ACCOUNT", principalId: await rt.session().resolve(R("service-account"), String(opts["serviceAccount"])) };
    throw new UsageError("name the principal: --user NAME or --service-account NAME");
  };
  const rbSchema = method(r, "setRoleBinding").output;
  const list = role
    .command("list")
    .alias("ls")
    .description("list a project's role bindings")
    .argument("<project>", "the project")
    .action(async (ref: string) => {
      const s = rt.session();
      const res = (await s.call(r, "listRoleBindings", { projectId: await s.resolve(r, ref) })) as unknown as { bindings?: Message[]; roleBindings?: Message[] };
      const items = res.roleBindings ?? res.bindings ?? [];
      const f = rt.output();
      if (f === "json" || f === "yaml") return write(rt.io.stdout, dataText(f, items.map((x) => jsonOf(rbSchema, x))));
      const cols = [{ header: "PRINCIPAL TYPE", path: "principalType" }, { header: "PRINCIPAL", path: "principalId" }, { header: "ROLE", path: "role" }];
      write(rt.io.stdout, items.length ? table(cols.map((c) => c.header), items.map((x) => cols.map((c) => cellText(rbSchema, x, c)))) : "No role bindings.");
    });
  NAME_ARG.set(list, "project");
  const set = role
    .command("set")
    .description("give a user or service account a role in a project")
    .argument("<project>", "the project")
    .argument("<role>", "reader, member or admin")
    .option("--user <user>", "the user")
    .option("--service-account <sa>", "the service account")
    .action(async (ref: string, roleName: string, opts: Json) => {
      const s = rt.session();
      const req = { projectId: await s.resolve(r, ref), ...(await principal(opts)), role: enumName("ROLE_", roleName) };
      const res = await s.call(r, "setRoleBinding", requestOf(method(r, "setRoleBinding").input, req, "the role binding"));
      const f = rt.output();
      write(rt.io.stdout, f === "json" || f === "yaml" ? dataText(f, jsonOf(rbSchema, res)) : `${cellText(rbSchema, res, { header: "", path: "principalId" })} is ${cellText(rbSchema, res, { header: "", path: "role" })} in ${ref}`);
    });
  NAME_ARG.set(set, "project");
  const remove = role
    .command("remove")
    .alias("rm")
    .description("take a principal's role in a project away")
    .argument("<project>", "the project")
    .option("--user <user>", "the user")
    .option("--service-account <sa>", "the service account")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const req = { projectId: await s.resolve(r, ref), ...(await principal(opts)) };
      await s.call(r, "deleteRoleBinding", requestOf(method(r, "deleteRoleBinding").input, req, "the role binding"));
      write(rt.io.stdout, `removed the role binding of ${req.principalId} in ${ref}`);
    });
  NAME_ARG.set(remove, "project");
}

/** quota set. */
export function addQuotaExtras(rt: Runtime, quota: Command): void {
  const r = R("quota");
  const set = quota
    .command("set")
    .description("set a project's limits (0: no limit)")
    .argument("<project>", "the project")
    .option("--vms <n>", "VMs")
    .option("--vcpus <n>", "vCPUs")
    .option("--memory <size>", "memory: 64GiB")
    .option("--volumes <n>", "volumes")
    .option("--volume-size <gib>", "GiB of volumes")
    .option("--networks <n>", "networks")
    .option("--floating-ips <n>", "floating IPs")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const projectId = await s.resolve(R("project"), ref);
      const current = (await s.call(r, "getQuota", { projectId })) as unknown as { limits?: object };
      const limits: Json = { ...(current.limits ? jsonOf(method(r, "getQuota").output.fields.find((f) => f.localName === "limits")!.message!, current.limits as Message) as Json : {}) };
      const num = (k: string, what: string) => (opts[k] !== undefined ? (/^\d+$/.test(String(opts[k])) ? String(opts[k]) : (() => { throw new UsageError(`${what} '${opts[k]}' is not a whole number`); })()) : undefined);
      const set = (field: string, v: string | undefined) => v !== undefined && setPath(limits, field, v);
      set("vms", num("vms", "--vms"));
      set("vcpus", num("vcpus", "--vcpus"));
      set("volumes", num("volumes", "--volumes"));
      set("networks", num("networks", "--networks"));
      set("floatingIps", num("floatingIps", "--floating-ips"));
      if (opts["memory"] !== undefined) set("memoryMib", String(parseMib(String(opts["memory"]))));
      if (opts["volumeSize"] !== undefined) set("volumeGib", String(parseGib(String(opts["volumeSize"]))));
      const m = method(r, "setQuota");
      const res = await s.call(r, "setQuota", requestOf(m.input, { projectId, limits }, "the quota"));
      printList(rt, r, [res]);
    });
  NAME_ARG.set(set, "project");
}

/** migration list/show are generic; this adds `vm migrations`-like progress for `migration show --wait`. */
export function addMigrationExtras(rt: Runtime, migration: Command): void {
  const r = R("migration");
  const wait = migration
    .command("wait")
    .description("follow a migration until it ends, with a progress bar")
    .argument("<ref>", "the migration id or prefix")
    .option("--timeout <duration>", "how long to wait (default 5m)")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const bar = progressBar(rt, "migrating [{bar}] {percentage}% | {phase}");
      bar.start(100, 0, { phase: "" });
      const ac = new AbortController();
      const follow = (async () => {
        while (!ac.signal.aborted) {
          try {
            const m = (await s.call(r, "getMigration", { id }, ac.signal)) as unknown as { status?: { transferredBytes: bigint; totalBytes: bigint } };
            const st = m.status;
            const pct = st && st.totalBytes > 0n ? Number((st.transferredBytes * 100n) / st.totalBytes) : 0;
            bar.update(Math.min(100, pct), { phase: cellText(method(r, "getMigration").output, m as unknown as Message, { header: "", path: "status.phase" }) });
          } catch {
            return;
          }
          await new Promise((res) => setTimeout(res, 300));
        }
      })();
      try {
        const done = await waitFor(rt, r, id, ["SUCCEEDED"], rt.waitTimeoutMs(opts), `migration ${id}`);
        if (done) printOne(rt, r, done, rt.output() === "table" ? "table" : rt.output());
      } finally {
        ac.abort();
        await follow;
        bar.stop();
      }
    });
  NAME_ARG.set(wait, "migration");
}


/**
 * vm console: attaches the terminal to the VM's serial console (console-attach.ts) over
 * an HTTP/2 transport, since AttachConsole is a bidirectional stream.
 */
export function addVmConsole(rt: Runtime, vm: Command): void {
  const r = R("vm");
  const cmd = vm
    .command("console")
    .description("attach this terminal to the VM's serial console (Ctrl-] detaches; one writer at a time, others view)")
    .argument("<ref>", "the VM")
    .option("--force", "take the writer role from the session holding it")
    .option("--read-only", "attach as a viewer: keys are not sent")
    .option("--tail <bytes>", `scroll-back shown on attach (default ${DEFAULT_TAIL_BYTES}; 0: new output only)`)
    .option("--escape <char>", "the detach character, one character or caret notation like ^A (default ^])")
    .action(async (ref: string, opts: Json) => {
      const s = rt.session();
      const id = await s.resolve(r, ref);
      const tail = opts["tail"] !== undefined ? nonNegativeInt(String(opts["tail"]), "--tail") : DEFAULT_TAIL_BYTES;
      const escape = opts["escape"] !== undefined ? String(opts["escape"]) : DEFAULT_ESCAPE;
      try {
        escapeByte(escape);
      } catch (err) {
        throw new UsageError(`--escape: ${(err as Error).message.replace(/^escape: /, "")}`);
      }
      const stdin = (rt.io.stdin ?? process.stdin) as NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (on: boolean) => void };
      const code = await attachConsole({
        transport: s.transportH2(),
        vmId: id,
        input: stdin,
        output: rt.io.stdout,
        stderr: rt.io.stderr,
        ...(stdin.isTTY && stdin.setRawMode ? { setRawMode: (on: boolean) => stdin.setRawMode!(on) } : {}),
        escape,
        force: opts["force"] === true,
        readOnly: opts["readOnly"] === true,
        tailBytes: tail,
        ...(rt.io.signal ? { signal: rt.io.signal } : {}),
        // The terminal may still be raw here: each line ends with \r\n.
        onError: (err) => {
          const { lines, exitCode } = describeError(err, s.conn.url);
          rt.io.stderr.write(lines.map((l) => `${l}\r\n`).join(""));
          return exitCode;
        },
      });
      if (code !== EXIT.OK) throw new ExitStatus(code);
    });
  NAME_ARG.set(cmd, "vm");
}
