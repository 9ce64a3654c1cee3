import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { escapeByte } from "./console-attach.js";

/*
 * `quantix vm console NAME` in a real pseudo-terminal: util-linux `script` runs the real
 * bin/quantix.mjs on a pty, its stdin a pipe the test types into,
 * against a real control plane whose node is an in-process agent running QEMU (TCG) with
 * the shell test guest. Keys reach the guest's busybox sh; Ctrl-] detaches with exit 0
 * and the terminal back in cooked mode. A second session is a viewer that sees the same
 * output; one attached with force takes the writer role and the first hears it.
 */

await tests();

async function tests(): Promise<void> {
  const { after, before, test } = await import("node:test");
  const { NodeStatus_Phase: Phase } = await import("@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js");
  const { buildTestGuest, ensureDebianPackages, GUEST_SHELL_ARG, GUEST_SHELL_PROMPT, qemuTestAgent, startTestServer, until } = await import("@quantix/testing");

  const BOOT_MS = 90_000;
  const BIN = fileURLToPath(new URL("../../../bin/quantix.mjs", import.meta.url));
  let s: Awaited<ReturnType<typeof startTestServer>>;
  let agent: ReturnType<typeof qemuTestAgent>;
  let dir: string;
  let vmId: string;
  const children = new Set<ChildProcess>();

  before(async () => {
    await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio", "bsdutils"]);
    const guest = await buildTestGuest();
    s = await startTestServer({ demo: false, defaultDeadlineMs: 30_000 });
    dir = await mkdtemp(join(tmpdir(), "quantix-cli-console-"));
    agent = qemuTestAgent(dir, `cli-console-${process.pid}`, [guest.imageDir]);
    await agent.start(s.url);
    const nodeId = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY", 30_000);
    const vm = await s.vms.createVM({ name: "cli-console", nodeId, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: `${guest.kernelArgs} ${GUEST_SHELL_ARG}` } } } });
    await s.vms.startVM({ id: vm.id });
    vmId = vm.id;
    await until(async () => (Buffer.from((await s.vms.getConsoleOutput({ vmId })).data).toString("utf8").includes(GUEST_SHELL_PROMPT) ? true : undefined), "the guest's shell prompt", BOOT_MS, 250);
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    if (vmId) await s.vms.stopVM({ id: vmId, force: true }).catch(() => undefined);
    await agent?.kill().catch(() => undefined);
    await s?.close();
    await agent?.backend.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /**
   * Runs `quantix vm console` on a pty (script -q -e), its keyboard a pipe; collects what
   * the terminal shows, then the terminal's icanon flag after the command (cooked mode
   * again: "icanon"; left raw: "-icanon").
   */
  function terminal(vm: string, force = false) {
    const env: NodeJS.ProcessEnv = { ...process.env, QX_NODE: process.execPath, QX_BIN: BIN, QX_URL: s.url, QX_VM: vm, QX_FORCE: force ? "--force" : "", QUANTIX_CONFIG: join(dir, "config.yaml"), TERM: "dumb" };
    delete env["NODE_TEST_CONTEXT"];
    // Values reach the shell as variables, never as code.
    const shell = '"$QX_NODE" "$QX_BIN" --url "$QX_URL" vm console "$QX_VM" $QX_FORCE; code=$?; printf "\\r\\nTTY-AFTER=%s\\r\\n" "$(stty -a | tr " ;" "\\n\\n" | grep -x -- "-\\?icanon")"; exit $code';
    const child = spawn("script", ["-q", "-e", "-c", shell, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
    children.add(child);
    let screen = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (screen += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (screen += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return {
      screen: () => screen,
      type: (keys: string) => child.stdin!.write(keys),
      waitFor: (text: string | RegExp, what: string, ms = 30_000) =>
        until(() => (typeof text === "string" ? screen.includes(text) : text.test(screen)) || undefined, what, ms, 50).catch((err: unknown) => {
          throw new Error(`${String(err)}; the screen: ${JSON.stringify(screen.slice(-400))}`);
        }),
      exited,
      kill: () => child.kill("SIGKILL"),
    };
  }

  test("escape characters: Ctrl-] by default, caret notation, one character", () => {
    assert.equal(escapeByte("\x1d"), 0x1d);
    assert.equal(escapeByte("^]"), 0x1d);
    assert.equal(escapeByte("^a"), 0x01);
    assert.equal(escapeByte("~"), 0x7e);
    assert.throws(() => escapeByte("ab"), /escape: must be one ASCII character/);
  });

  test("quantix vm console in a real terminal: type into the guest's shell, a viewer sees it, force takes over, Ctrl-] detaches", { timeout: 240_000 }, async () => {
    const one = terminal("cli-console");
    await one.waitFor(`Connected to the console of VM ${vmId}; escape character is ^]`, "attached");
    // The scroll-back: the prompt the guest printed before this session attached.
    await one.waitFor("quantix-sh#", "the scroll-back");
    one.type("echo $((6*7))\r");
    // The pty turns the guest's CR LF into CR CR LF.
    await one.waitFor(/\n42\r*\n/, "the shell's answer", 60_000);

    // A second terminal asks to write while the first holds the role: it is a viewer and sees the same output.
    const two = terminal("cli-console");
    await two.waitFor("[viewer: the writer role is held by another session", "the second is a viewer");
    two.type("echo viewer-keys\r");
    await two.waitFor("[viewer: keys are not sent; ^] detaches]", "the viewer told its keys go nowhere");
    one.type("echo $((6*7+1))\r");
    await two.waitFor(/\n43\r*\n/, "the viewer sees the writer's answer", 60_000);
    assert.ok(!one.screen().includes("viewer-keys"), "the viewer's keys never reached the guest");

    // A third attaches with force: it writes, the first is told it was displaced.
    const three = terminal(vmId.slice(0, 8), true);
    await three.waitFor("[writer: you took the writer role with force", "force takes the role");
    await one.waitFor("[displaced: another session took the writer role with force", "the first displaced");
    three.type("echo $((6*7+2))\r");
    await one.waitFor(/\n44\r*\n/, "the displaced session still sees output", 60_000);

    // Ctrl-] detaches each; exit 0, and the terminal is back in cooked mode.
    for (const t of [one, two, three]) {
      t.type("\x1d");
      assert.equal(await t.exited, 0, t.screen().slice(-400));
      assert.match(t.screen(), /\[detached from VM [0-9a-f-]+\]/);
      assert.match(t.screen(), /TTY-AFTER=icanon\r/, "the terminal is back in cooked mode");
    }
  });

  test("quantix vm console: an unknown VM is one clear line and exit 3 (not found), the terminal untouched", { timeout: 60_000 }, async () => {
    const t = terminal("no-such-vm");
    assert.equal(await t.exited, 3, t.screen());
    assert.match(t.screen(), /Error: no vm named 'no-such-vm'/i);
    assert.match(t.screen(), /TTY-AFTER=icanon\r/);
  });
}
