import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { ensureDebianPackages, runNode, startTestServer, type TestServer } from "@quantix/testing";

// The real `quantix` command (bin/quantix.mjs) in a child process: exit codes, a control
// plane that is down, and the completion scripts run by the shells themselves.

const BIN = new URL("../../../bin/quantix.mjs", import.meta.url).pathname;
const exec = promisify(execFile);

let s: TestServer;
let dir: string;
let pathDir: string;

before(async () => {
  s = await startTestServer();
  dir = await mkdtemp(join(tmpdir(), "quantix-cli-bin-"));
  // `quantix` on PATH, as an installed command would be, for the completion scripts.
  pathDir = join(dir, "bin");
  await mkdir(pathDir);
  await symlink(BIN, join(pathDir, "quantix"));
});
after(async () => {
  await s.close();
  await rm(dir, { recursive: true, force: true });
});

const quantix = (args: string[], env: Record<string, string> = {}) => runNode([BIN, ...args], { QUANTIX_CONFIG: join(dir, "config.yaml"), QUANTIX_URL: s.url, ...env }, dir);

test("exit codes: 0 listed, 3 unknown name, 2 unknown flag, 6 a control plane that is down (one line naming the URL)", async () => {
  const list = quantix(["vm", "list", "-o", "name"]);
  assert.equal(await list.exited, 0, list.err());
  assert.ok(list.out().split("\n").includes("web-server-01"), list.out());
  const unknown = quantix(["vm", "show", "no-such-vm"]);
  assert.equal(await unknown.exited, 3);
  assert.equal(unknown.err(), "Error: no VM named 'no-such-vm' (nor with that id or id prefix)\n");
  const flag = quantix(["node", "list", "--frobnicate"]);
  assert.equal(await flag.exited, 2);
  assert.equal(flag.err(), "Error: unknown option '--frobnicate'\n");
  const down = quantix(["vm", "list"], { QUANTIX_URL: "http://127.0.0.1:1" });
  assert.equal(await down.exited, 6);
  assert.equal(down.out(), "");
  const lines = down.err().trim().split("\n");
  assert.equal(lines.length, 1, down.err());
  assert.match(lines[0]!, /^Error: cannot reach the control plane at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\): is the control plane running\? Start it with 'npm start'/);
});

test("bash completion, checked by bash: commands, and VM names from the live server", async () => {
  const script = quantix(["completion", "bash"]);
  assert.equal(await script.exited, 0);
  const scriptPath = join(dir, "quantix.bash");
  await writeFile(scriptPath, script.out());
  await exec("bash", ["-n", scriptPath]);
  const complete = async (words: string[]) => {
    const cword = words.length - 1;
    const arr = words.map((w) => `'${w}'`).join(" ");
    const { stdout } = await exec("bash", ["-c", `source '${scriptPath}'; COMP_WORDS=(${arr}); COMP_CWORD=${cword}; _quantix_complete; printf '%s\\n' "\${COMPREPLY[@]}"`], {
      env: { ...process.env, PATH: `${pathDir}:${process.env["PATH"]}`, QUANTIX_URL: s.url, QUANTIX_CONFIG: join(dir, "config.yaml") },
      timeout: 60_000,
    });
    return stdout.split("\n").filter((l) => l !== "");
  };
  const [cmds, vmNames, subs, flags] = await Promise.all([complete(["quantix", "v"]), complete(["quantix", "vm", "start", "web"]), complete(["quantix", "vm", ""]), complete(["quantix", "vm", "list", "--w"])]);
  assert.ok(cmds.includes("vm") && cmds.includes("volume") && cmds.includes("vpn"), cmds.join(","));
  assert.deepEqual(vmNames, ["web-server-01"]);
  assert.ok(subs.includes("start") && subs.includes("list") && subs.includes("migrate"), subs.join(","));
  assert.deepEqual(flags, ["--watch"]);
});

test("zsh completion, checked by zsh: the script parses, registers with compinit, and offers VM names from the live server", { timeout: 180_000 }, async () => {
  await ensureDebianPackages(["zsh"]);
  const script = quantix(["completion", "zsh"]);
  assert.equal(await script.exited, 0);
  const p = join(dir, "_quantix");
  await writeFile(p, script.out());
  await exec("zsh", ["-n", p]);
  const env = { ...process.env, PATH: `${pathDir}:${process.env["PATH"]}`, QUANTIX_URL: s.url, QUANTIX_CONFIG: join(dir, "config.yaml"), QX_SCRIPT: p };
  // compinit registers the function for the command; compadd (a builtin only inside a
  // completion widget) is stood in for by a function printing the candidates it is given.
  const { stdout: registered } = await exec("zsh", ["-f", "-c", 'autoload -U compinit && compinit -u -D && source "$QX_SCRIPT" && print -r -- "$_comps[quantix]"'], { env, timeout: 60_000 });
  assert.equal(registered.trim(), "_quantix");
  const complete = async (words: string[]) => {
    const { stdout } = await exec("zsh", ["-f", "-c", 'source "$QX_SCRIPT"; compadd() { print -rl -- "${(@P)2}"; }; words=("${(@s: :)QX_WORDS}"); CURRENT=${#words}; _quantix'], { env: { ...env, QX_WORDS: words.join(" ") }, timeout: 60_000 });
    return stdout.split("\n").filter((l) => l !== "");
  };
  assert.deepEqual(await complete(["quantix", "vm", "start", "web"]), ["web-server-01"]);
  const subs = await complete(["quantix", "vm", ""]);
  assert.ok(subs.includes("console") && subs.includes("list"), subs.join(","));
});
