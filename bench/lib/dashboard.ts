import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { chromium } from "playwright-core";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { ensureDebianPackages } from "@quantix/testing";
import { ROOT } from "./proc.js";
import { median, percentile } from "./stats.js";

export interface DashboardResult {
  vms: number;
  updates: number;
  /** Page open to every VM's row in the table (1,000 rows on one page). */
  firstPaintMs: number;
  /** UpdateVM sent to the change painted in the page, per update. */
  pageMs: number[];
  /** UpdateVM sent to the same change arriving at a bare WatchVMs client (connect-node), per update. */
  bareMs: number[];
  pageP50: number;
  pageP95: number;
  bareP50: number;
  bareP95: number;
}

/** Wall-clock milliseconds with sub-ms precision, comparable between this process and the browser's (same machine). */
const wall = () => performance.timeOrigin + performance.now();

/**
 * The dashboard's live path, end to end: `vms` VMs listed on one page of the VM list (the
 * WatchVMs snapshot), then `updates` UpdateVM calls (a new description, shown in the row)
 * one at a time; each is timed from the call to the row's change being painted (a
 * MutationObserver on the table, then the next animation frame, i.e. the frame that
 * paints it) and, in the same run, to the same update arriving at a bare WatchVMs client.
 */
export async function dashboardBench(url: string, vms = 1000, updates = 40, progress: (m: string) => void = () => undefined): Promise<DashboardResult> {
  await ensureDebianPackages(["chromium"]);
  const built = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "scripts/build-dashboard.ts")], { cwd: ROOT, stdio: "inherit" });
  if (built.status !== 0) throw new Error("the dashboard build failed");
  const client = createClient(VMService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
  progress(`dashboard: creating ${vms} VMs`);
  const ids: string[] = [];
  for (let i = 0; i < vms; i += 25) {
    const batch = await Promise.all(Array.from({ length: Math.min(25, vms - i) }, (_, k) => client.createVM({ name: `dash-${String(i + k).padStart(4, "0")}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } })));
    ids.push(...batch.map((v) => v.id));
  }
  // The bare watcher: the same stream the page reads, with nothing after the decode.
  const ctl = new AbortController();
  const arrived = new Map<string, number>();
  let synced!: () => void;
  const ready = new Promise<void>((r) => (synced = r));
  void (async () => {
    try {
      for await (const u of client.watchVMs({}, { signal: ctl.signal })) {
        if (u.type === EventType.SYNCED) synced();
        else if (u.vm && u.vm.description.startsWith("bench-")) arrived.set(u.vm.description, wall());
      }
    } catch {
      /* aborted at the end */
    }
  })();
  await ready;

  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const opened = wall();
    await page.goto(`${url}/vms`);
    await page.getByLabel("Rows per page").selectOption("1000");
    await page.locator("[data-testid=vm-table] tbody tr").nth(vms - 1).waitFor({ timeout: 60_000 });
    const firstPaintMs = wall() - opened;
    progress(`dashboard: ${vms} rows in the page after ${firstPaintMs.toFixed(0)} ms; ${updates} updates`);
    const pageMs: number[] = [];
    const bareMs: number[] = [];
    for (let i = 0; i < updates; i++) {
      const text = `bench-${i}`;
      const id = ids[(i * 37) % ids.length]!;
      // Armed before the call: resolves with the wall time of the frame that paints the text.
      // (Browser code as a string: this file is type-checked without the DOM's types.)
      const painted = page.evaluate(`new Promise((resolve) => {
        const body = document.querySelector("[data-testid=vm-table] tbody");
        const obs = new MutationObserver(() => {
          if (!body.textContent.includes(${JSON.stringify(text)})) return;
          obs.disconnect();
          requestAnimationFrame(() => resolve(performance.timeOrigin + performance.now()));
        });
        obs.observe(body, { subtree: true, childList: true, characterData: true });
      })`) as Promise<number>;
      // The observer is in place once evaluate's script ran: a round trip that finishes after it.
      await page.evaluate(() => 0);
      const sent = wall();
      await client.updateVM({ id, description: text, updateMask: { paths: ["description"] } });
      const at = await painted;
      pageMs.push(at - sent);
      const deadline = Date.now() + 10_000;
      while (!arrived.has(text) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
      bareMs.push((arrived.get(text) ?? NaN) - sent);
    }
    return { vms, updates, firstPaintMs, pageMs, bareMs, pageP50: median(pageMs), pageP95: percentile(pageMs, 95), bareP50: median(bareMs), bareP95: percentile(bareMs, 95) };
  } finally {
    ctl.abort();
    await browser.close();
  }
}
