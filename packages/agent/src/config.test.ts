import assert from "node:assert/strict";
import { test } from "node:test";
import { QuantixError } from "@quantix/core";
import { loadAgentConfig, vmSocketPrefix } from "./config.js";

test("defaults follow the seed (qemu, KVM on, 127.0.0.1:9090)", () => {
  const c = loadAgentConfig({});
  assert.equal(c.backend, "qemu");
  assert.equal(c.qemuKvm, true);
  assert.equal(c.qemuBinary, "qemu-system-x86_64");
  assert.equal(c.address, "127.0.0.1");
  assert.equal(c.port, 9090);
  assert.equal(c.controlPlane, undefined);
  assert.ok(c.stateDir.endsWith(".quantix-agent"));
});

test("flags override env vars", () => {
  const c = loadAgentConfig({ VMCP_BACKEND: "qemu", VMCP_PORT: "1" }, ["--backend", "simulated", "--port=0", "--control-plane", "http://127.0.0.1:8080/", "--qemu-kvm", "false"]);
  assert.equal(c.backend, "simulated");
  assert.equal(c.port, 0);
  assert.equal(c.qemuKvm, false);
  assert.equal(c.controlPlane, "http://127.0.0.1:8080");
});

test("every bad setting is named at once", () => {
  let err: unknown;
  try {
    loadAgentConfig({ VMCP_BACKEND: "xen", VMCP_PORT: "70000", VMCP_QEMU_KVM: "maybe", QUANTIX_CONTROL_PLANE: "ftp://x", QUANTIX_NODE_NAME: "bad name" }, ["--nope"]);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof QuantixError);
  for (const name of ["VMCP_BACKEND", "'xen'", "VMCP_PORT", "VMCP_QEMU_KVM", "QUANTIX_CONTROL_PLANE", "QUANTIX_NODE_NAME", "--nope"]) assert.ok(err.message.includes(name), `${name} missing from: ${err.message}`);
});

test("CH/FC endpoints name where per-VM sockets go; binaries have their own settings", () => {
  const c = loadAgentConfig({ VMCP_CH_ENDPOINT: "unix:///run/quantix/ch.sock", VMCP_FC_BINARY: "/opt/fc/firecracker" }, ["--ch-binary", "/usr/local/bin/cloud-hypervisor"]);
  assert.equal(vmSocketPrefix(c.chEndpoint), "/run/quantix/ch");
  assert.equal(vmSocketPrefix(c.fcEndpoint), "/tmp/firecracker");
  assert.equal(c.chBinary, "/usr/local/bin/cloud-hypervisor");
  assert.equal(c.fcBinary, "/opt/fc/firecracker");
  assert.equal(loadAgentConfig({}).chBinary, "cloud-hypervisor");
  assert.equal(loadAgentConfig({ VMCP_QEMU_ENDPOINT: "qemu:///system" }).qemuEndpoint, "qemu:///system");
});

test("a bad endpoint or binary is named with what to do", () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ VMCP_CH_ENDPOINT: "http://127.0.0.1:8080" }, /VMCP_CH_ENDPOINT .*unix:\/\/<absolute path>\.sock/],
    [{ VMCP_FC_ENDPOINT: "unix://relative.sock" }, /VMCP_FC_ENDPOINT/],
    [{ VMCP_CH_ENDPOINT: "unix:///tmp/a,b.sock" }, /VMCP_CH_ENDPOINT/],
    [{ VMCP_CH_ENDPOINT: `unix:///tmp/${"d".repeat(40)}/ch.sock` }, /VMCP_CH_ENDPOINT .*107-byte limit/],
    [{ VMCP_QEMU_ENDPOINT: "qemu+ssh://host/system" }, /VMCP_QEMU_ENDPOINT .*must be qemu:\/\/\/system/],
    [{ VMCP_QEMU_ENDPOINT: "qemu:///session" }, /VMCP_QEMU_ENDPOINT/],
    [{ VMCP_CH_BINARY: "bin/cloud-hypervisor" }, /VMCP_CH_BINARY .*absolute path/],
    [{ VMCP_FC_BINARY: "" }, /VMCP_FC_BINARY/],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => loadAgentConfig(env), (e: unknown) => e instanceof QuantixError && message.test(e.message), JSON.stringify(env));
  }
  // The longest socket that still fits: 107 bytes with a 63-byte VM id.
  const fits = `unix:///${"d".repeat(107 - "/".length - "-".length - 63 - ".sock".length)}.sock`;
  assert.doesNotThrow(() => loadAgentConfig({ VMCP_CH_ENDPOINT: fits }));
  assert.throws(() => loadAgentConfig({ VMCP_CH_ENDPOINT: fits.replace("/d", "/dd") }), /107-byte/);
});

test("VMCP_SHARED_DIRS: comma-separated absolute directories, none by default", () => {
  assert.deepEqual(loadAgentConfig({}).sharedDirs, []);
  assert.deepEqual(loadAgentConfig({ VMCP_SHARED_DIRS: "/srv/images, /mnt/shared/" }).sharedDirs, ["/srv/images", "/mnt/shared/"]);
  assert.throws(() => loadAgentConfig({ VMCP_SHARED_DIRS: "/srv,relative/dir" }), /VMCP_SHARED_DIRS \(--shared-dirs\) must list absolute directory paths separated by commas, got 'relative\/dir'/);
});

test("VMCP_IMAGE_DIRS: defaults to the state dir's images/ and /var/lib/quantix/images; relative entries are refused", () => {
  const d = loadAgentConfig({ VMCP_STATE_DIR: "/srv/agent" });
  assert.deepEqual(d.imageDirs, ["/srv/agent/images", "/var/lib/quantix/images"]);
  assert.deepEqual(loadAgentConfig({ VMCP_IMAGE_DIRS: "/a" }, ["--image-dirs", "/b, /c/"]).imageDirs, ["/b", "/c/"]);
  assert.throws(() => loadAgentConfig({ VMCP_IMAGE_DIRS: "/a,images" }), /VMCP_IMAGE_DIRS \(--image-dirs\) must list absolute directory paths .*'images'/);
});

test("--join needs --join-token and --ca-cert, takes https only, and is the control plane unless one is named", () => {
  const c = loadAgentConfig({ VMCP_JOIN_TOKEN: "qjt_x.y" }, ["--join", "https://cp.example:8080/", "--ca-cert", "/etc/quantix/ca.crt"]);
  assert.deepEqual([c.join, c.joinToken, c.caCert, c.controlPlane], ["https://cp.example:8080", "qjt_x.y", "/etc/quantix/ca.crt", "https://cp.example:8080"]);
  assert.equal(loadAgentConfig({ QUANTIX_CONTROL_PLANE: "https://other:8080" }, ["--join", "https://cp:8080", "--join-token", "t", "--ca-cert", "/ca"]).controlPlane, "https://other:8080");
  assert.throws(() => loadAgentConfig({}, ["--join", "https://cp:8080"]), /VMCP_JOIN_TOKEN \(--join-token\) is required with --join[\s\S]*VMCP_CA_CERT \(--ca-cert\) is required with --join/);
  assert.throws(() => loadAgentConfig({}, ["--join", "http://cp:8080", "--join-token", "t", "--ca-cert", "/ca"]), /VMCP_JOIN \(--join\) must be a base URL such as https:/);
  assert.equal(loadAgentConfig({}).join, undefined);
});

test("VMCP_NETWORK_UNDERLAY_ADDRESS: an IPv4 address, or unset (detected at each probe)", () => {
  assert.equal(loadAgentConfig({}).networkUnderlayAddress, undefined);
  assert.equal(loadAgentConfig({ VMCP_NETWORK_UNDERLAY_ADDRESS: "192.0.2.1" }).networkUnderlayAddress, "192.0.2.1");
  assert.equal(loadAgentConfig({}, ["--network-underlay-address", "10.0.0.5"]).networkUnderlayAddress, "10.0.0.5");
  for (const bad of ["192.0.2", "::1", "192.0.2.1/24", "host.example", "01.2.3.4"]) {
    assert.throws(() => loadAgentConfig({ VMCP_NETWORK_UNDERLAY_ADDRESS: bad }), /VMCP_NETWORK_UNDERLAY_ADDRESS \(--network-underlay-address\) must be an IPv4 address/, bad);
  }
});

test("VMCP_NETWORK_PHYSICAL_NETWORKS: name=interface pairs, validated, empty by default", () => {
  assert.deepEqual([...loadAgentConfig({}).networkPhysicalNetworks], []);
  assert.deepEqual([...loadAgentConfig({ VMCP_NETWORK_PHYSICAL_NETWORKS: "ext=eth1, physnet2=bond0.100" }).networkPhysicalNetworks], [["ext", "eth1"], ["physnet2", "bond0.100"]]);
  assert.deepEqual([...loadAgentConfig({}, ["--network-physical-networks", "ext=qrtveth0"]).networkPhysicalNetworks], [["ext", "qrtveth0"]]);
  for (const [bad, why] of [["Ext=eth1", /not a physical network name/], ["ext", /needs '=<interface>'/], ["ext=eth 1", /needs '=<interface>'/], ["ext=averyveryverylongname", /needs '=<interface>'/], ["ext=eth1,ext=eth2", /given twice/], ["a=eth1,b=eth1", /interface 'eth1' is given to both/], ["ext=$(reboot)", /needs '=<interface>'/]] as const) {
    assert.throws(() => loadAgentConfig({ VMCP_NETWORK_PHYSICAL_NETWORKS: bad }), (e: Error) => /VMCP_NETWORK_PHYSICAL_NETWORKS \(--network-physical-networks\)/.test(e.message) && why.test(e.message), bad);
  }
});

test("VMCP_SIM_BOOT_MS sets the simulated boot time: 200 ms by default, 0-600000, else refused naming it", () => {
  assert.equal(loadAgentConfig({}).simBootMs, 200);
  assert.equal(loadAgentConfig({ VMCP_SIM_BOOT_MS: "0" }).simBootMs, 0);
  assert.equal(loadAgentConfig({}, ["--sim-boot-ms=600000"]).simBootMs, 600_000);
  for (const bad of ["-1", "1.5", "600001", "", "40ms", "1e3"]) {
    assert.throws(() => loadAgentConfig({ VMCP_SIM_BOOT_MS: bad }), (e: unknown) => e instanceof QuantixError && e.code === "invalid_argument" && e.message.includes(`VMCP_SIM_BOOT_MS (--sim-boot-ms) must be a whole number of ms, 0-600000, got '${bad}'`), bad);
  }
});
