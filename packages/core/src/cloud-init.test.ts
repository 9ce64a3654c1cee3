import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { CLOUD_INIT_MAX_BYTES, hostnameFor, isHostname, nocloudMetaData, validateCloudInit } from "./cloud-init.js";
import { Violations } from "./violations.js";

const P = "config.cloud_init";
function check(userData = "", metaData = "", networkConfig = "") {
  const v = new Violations();
  validateCloudInit(v, P, { userData, metaData, networkConfig });
  return v.list;
}

describe("validateCloudInit", () => {
  test("accepts cloud-config, a meta-data mapping with a hostname, and a network-config mapping", () => {
    assert.deepEqual(check("#cloud-config\nruncmd: [echo hi]\n", "local-hostname: web-1.example\n", "version: 2\nethernets: {}\n"), []);
    assert.deepEqual(check(), []);
  });

  test("each document over the limit is TOO_LARGE under its own field path", () => {
    const big = "x".repeat(CLOUD_INIT_MAX_BYTES + 1);
    assert.deepEqual(check(big, big, big).map((v) => [v.field, v.reason]), [
      [`${P}.user_data`, "TOO_LARGE"],
      [`${P}.meta_data`, "TOO_LARGE"],
      [`${P}.network_config`, "TOO_LARGE"],
    ]);
    // The limit is in bytes: 2-byte characters count twice.
    assert.equal(check("é".repeat(CLOUD_INIT_MAX_BYTES / 2 + 1)).length, 1);
  });

  test("meta-data and network-config must be YAML mappings", () => {
    for (const bad of ["- a\n- b\n", "just a string", "a: [unclosed", "a: 1\na: 2\n"]) {
      const v = check("", bad);
      assert.equal(v.length, 1, bad);
      assert.equal(v[0]!.field, `${P}.meta_data`);
      assert.equal(v[0]!.reason, "INVALID_FORMAT");
    }
    assert.equal(check("", "", "[1, 2]")[0]?.field, `${P}.network_config`);
  });

  test("instance-id is the agent's; local-hostname must be a hostname", () => {
    assert.match(check("", "instance-id: other\n")[0]?.description ?? "", /instance-id/);
    for (const host of ["bad_host", "-lead", "a..b", "x".repeat(64), "ünï", "1234 5"]) {
      const v = check("", `local-hostname: "${host}"\n`);
      assert.equal(v[0]?.field, `${P}.meta_data`, host);
      assert.match(v[0]?.description ?? "", /local-hostname/);
    }
    assert.match(check("", "local-hostname: 42\n")[0]?.description ?? "", /local-hostname/);
  });

  test("an alias bomb is refused, not expanded", () => {
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]", "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]", "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]", "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]"].join("\n");
    assert.equal(check("", bomb)[0]?.field, `${P}.meta_data`);
  });
});

describe("nocloudMetaData", () => {
  test("sets instance-id to the VM id and a default local-hostname; keeps the user's keys and hostname", () => {
    assert.deepEqual(parse(nocloudMetaData("vm_01", "")), { "instance-id": "vm_01", "local-hostname": "vm-01" });
    assert.deepEqual(parse(nocloudMetaData("vm-1", "local-hostname: web\npublic-keys:\n  - ssh-ed25519 AAAA\n")), { "instance-id": "vm-1", "local-hostname": "web", "public-keys": ["ssh-ed25519 AAAA"] });
  });

  test("hostnameFor always gives a hostname", () => {
    for (const id of ["a", "vm_1", "x-", "_-_", "a".repeat(63), "0_"]) assert.ok(isHostname(hostnameFor(id)), id);
  });
});
