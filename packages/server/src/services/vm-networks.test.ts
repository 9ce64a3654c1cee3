import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { rejection, startTestServer, type TestServer } from "@quantix/testing";

const WEB = "11111111-1111-1111-1111-111111111111";
const spec = { cpu: { cores: 1 }, memory: { sizeMib: 512n } };

// No network exists until the networking service is built: a NIC would boot with a TAP
// that is down and on no bridge, so the API refuses it instead of reporting RUNNING.
describe("NICs on networks that do not exist", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.close());

  it("CreateVM with a NIC is FAILED_PRECONDITION naming the network and the NIC's field path, and creates nothing", async () => {
    const err = await rejection(s.vms.createVM({ name: "nic-vm", spec: { ...spec, nics: [{ id: "eth0", networkId: "no-such-net" }] }, startOnCreate: true }));
    assert.equal(err.code, Code.FailedPrecondition, err.message);
    assert.match(err.rawMessage, /spec\.nics\[0\]\.network_id/);
    assert.match(err.rawMessage, /network 'no-such-net', which does not exist/);
    const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
    assert.deepEqual(fields, ["spec.nics[0].network_id"]);
    assert.equal((await s.vms.listVMs({})).vms.some((v) => v.name === "nic-vm"), false);
  });

  it("UpdateVM that adds a NIC is refused the same way; the VM is unchanged", async () => {
    const vm = await s.vms.createVM({ name: "no-nic-vm", spec });
    const err = await rejection(s.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [{ id: "eth0", networkId: "default" }] }, updateMask: { paths: ["spec.nics"] } }));
    assert.equal(err.code, Code.FailedPrecondition, err.message);
    assert.match(err.rawMessage, /spec\.nics\[0\]\.network_id: attaches to network 'default'/);
    const now = await s.vms.getVM({ id: vm.id });
    assert.equal(now.spec?.nics.length, 0);
    assert.equal(now.resourceVersion, vm.resourceVersion);
  });

  it("a demo VM stored with a NIC can still be updated where its NICs do not change", async () => {
    const up = await s.vms.updateVM({ id: WEB, description: "still the web server", updateMask: { paths: ["description"] } });
    assert.equal(up.description, "still the web server");
    assert.equal(up.spec?.nics.length, 1);
  });
});
