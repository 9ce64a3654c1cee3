import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { startTestServer, type TestServer } from "@quantix/testing";

// Many clients at once: uniqueness holds under racing creates, and keyset paging sees
// every VM that exists throughout exactly once while others come and go.

const PROJECT = "00000000-0000-0000-0000-000000000001";
const SPEC = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };

type Vms = Client<typeof VMService>;

const h2 = (url: string): Vms => createClient(VMService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));

/** A name whose random prefix spreads VMs over the whole name order. */
const randomName = (kind: string) => `vm-${randomBytes(6).toString("hex")}-${kind}`;

/** Creates `n` VMs in batches of 100; returns their ids. */
async function createMany(vms: Vms, n: number, kind: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 100) {
    const batch = Array.from({ length: Math.min(100, n - i) }, () => vms.createVM({ name: randomName(kind), projectId: PROJECT, spec: SPEC }));
    for (const vm of await Promise.all(batch)) ids.push(vm.id);
  }
  return ids;
}

describe("concurrent CreateVM with one name", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false });
  });
  after(() => s.close());

  it("creates exactly one VM; the other 49 get already_exists", async () => {
    const vms = h2(s.url);
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => vms.createVM({ name: "contested", projectId: PROJECT, spec: SPEC })));
    const ok = results.filter((r) => r.status === "fulfilled");
    const codes = results.flatMap((r) => (r.status === "rejected" ? [ConnectError.from(r.reason).code] : []));
    assert.equal(ok.length, 1);
    assert.deepEqual(codes, Array.from({ length: 49 }, () => Code.AlreadyExists));
    const list = await vms.listVMs({ projectId: PROJECT, pageSize: 1000 });
    const named = list.vms.filter((vm) => vm.name === "contested");
    assert.equal(named.length, 1);
    assert.equal(named[0]!.id, ok[0]!.value.id);
    assert.equal(list.totalCount, 1);
  });
});

describe("paging while other clients write", () => {
  let s: TestServer;
  let writer: Vms;
  let stable: Set<string>;
  /** VMs created up front only to be deleted while paging. */
  let churn: string[];
  before(async () => {
    s = await startTestServer({ demo: false });
    writer = h2(s.url);
    stable = new Set(await createMany(writer, 1000, "stable"));
    churn = await createMany(writer, 200, "churn");
  });
  after(() => s.close());

  /** One round of other clients' writes: two new VMs, two deleted churn VMs. */
  async function churnStep(): Promise<{ created: number; deleted: number }> {
    const victims = churn.splice(0, 2);
    await Promise.all([
      ...victims.map((id) => writer.deleteVM({ id })),
      writer.createVM({ name: randomName("new"), projectId: PROJECT, spec: SPEC }),
      writer.createVM({ name: randomName("new"), projectId: PROJECT, spec: SPEC }),
    ]);
    return { created: 2, deleted: victims.length };
  }

  for (const orderBy of ["name", "created_at desc"]) {
    it(`page_size 37 ordered by "${orderBy}" sees every stable VM exactly once`, async () => {
      const reader = h2(s.url);
      const seen = new Map<string, number>();
      let token = "";
      let pages = 0;
      let writes = 0;
      do {
        // Each page is read while a write round is in flight.
        const [page, w] = await Promise.all([reader.listVMs({ projectId: PROJECT, pageSize: 37, pageToken: token, orderBy }), churnStep()]);
        writes += w.created + w.deleted;
        assert.ok(page.vms.length <= 37);
        for (const vm of page.vms) seen.set(vm.id, (seen.get(vm.id) ?? 0) + 1);
        token = page.nextPageToken;
        pages++;
        assert.ok(pages < 200, "paging does not terminate");
      } while (token !== "");

      const repeated = [...seen].filter(([, n]) => n > 1);
      assert.deepEqual(repeated, [], "ids seen more than once");
      const missing = [...stable].filter((id) => !seen.has(id));
      assert.deepEqual(missing, [], "stable VMs not seen");
      assert.ok(pages >= Math.ceil(1000 / 37), `only ${pages} pages`);
      assert.ok(writes >= 4 * pages - 4, `only ${writes} writes during ${pages} pages`);
    });
  }
});
