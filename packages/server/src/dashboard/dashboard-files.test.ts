import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { get } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startTestServer, type TestServer } from "@quantix/testing";

/*
 * The control plane serves the built dashboard at / (a made-up build here: the browser
 * test, packages/dashboard/src/dashboard.test.ts, serves the real one): files with their
 * types and cache headers, index.html for client-side routes, never the API's paths; and
 * without a build, a page saying how to build it.
 */
describe("the dashboard's files at /", () => {
  let dir: string;
  let s: TestServer;
  let bare: TestServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "quantix-dashboard-files-"));
    await mkdir(join(dir, "dist/assets"), { recursive: true });
    await writeFile(join(dir, "dist/index.html"), "<!doctype html><title>Quantix</title><div id=root></div>");
    await writeFile(join(dir, "dist/assets/app-abc123.js"), "console.log(1)");
    await writeFile(join(dir, "dist/assets/app-abc123.css"), "body{}");
    await writeFile(join(dir, "secret.txt"), "outside");
    s = await startTestServer({ demo: false, dashboardDir: join(dir, "dist") });
    bare = await startTestServer({ demo: false, dashboardDir: join(dir, "missing") });
  });
  after(async () => {
    await s?.close();
    await bare?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("/ and client-side routes answer index.html, revalidated", async () => {
    for (const path of ["/", "/vms", "/vms/abc/console", "/nodes/x"]) {
      const r = await fetch(s.url + path);
      assert.equal(r.status, 200, path);
      assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
      assert.equal(r.headers.get("cache-control"), "no-cache");
      assert.match(await r.text(), /<div id=root>/);
    }
  });

  test("hashed assets with their content types, cached for a year; a missing file is a 404", async () => {
    const js = await fetch(`${s.url}/assets/app-abc123.js`);
    assert.equal(js.status, 200);
    assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.equal(js.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal(await js.text(), "console.log(1)");
    assert.equal((await fetch(`${s.url}/assets/app-abc123.css`)).headers.get("content-type"), "text/css; charset=utf-8");
    const missing = await fetch(`${s.url}/assets/nope.js`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });

  test("the API's paths are never shadowed: health, metrics, the console's doors, RPCs", async () => {
    const health = await fetch(`${s.url}/_/health`);
    assert.equal(health.headers.get("content-type"), "application/json");
    assert.equal(((await health.json()) as { status: string }).status, "ok");
    const metrics = await fetch(`${s.url}/metrics`);
    assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain/);
    await metrics.body?.cancel();
    const consoleText = await fetch(`${s.url}/v1/vms/nope/console`);
    assert.equal(consoleText.status, 404);
    assert.match(await consoleText.text(), /not_found/);
    const other = await fetch(`${s.url}/v1/other`);
    assert.equal(other.headers.get("content-type"), "application/json");
    await other.body?.cancel();
    const rpc = await fetch(`${s.url}/Quantixkvm.compute.v1.VMService/ListVMs`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    assert.equal(rpc.status, 200);
    assert.equal(rpc.headers.get("content-type"), "application/json");
    await rpc.body?.cancel();
    // A GET on an RPC path is the RPC router's (or its 404), never index.html.
    const get = await fetch(`${s.url}/Quantixkvm.compute.v1.VMService/Nope`);
    assert.doesNotMatch(get.headers.get("content-type") ?? "", /text\/html/);
    await get.body?.cancel();
  });

  test("paths out of the build directory are refused", async () => {
    // Raw paths (fetch would normalise the dots away before sending).
    const raw = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        get({ host: "127.0.0.1", port: new URL(s.url).port, path }, (res) => {
          let body = "";
          res.setEncoding("utf8").on("data", (d: string) => (body += d)).on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        }).on("error", reject);
      });
    for (const path of ["/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt", "/assets/../../secret.txt"]) {
      const r = await raw(path);
      assert.equal(r.status, 404, path);
      assert.doesNotMatch(r.body, /outside/, path);
    }
  });

  test("without a build, / answers a page saying how to build it (503), not a 404", async () => {
    const r = await fetch(`${bare.url}/vms`);
    assert.equal(r.status, 503);
    assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
    const text = await r.text();
    assert.match(text, /The dashboard is not built/);
    assert.match(text, /npm run build:dashboard/);
  });
});
