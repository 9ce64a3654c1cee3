import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type Capability, type HypervisorPort, type ObservedPower, type VmObservation } from "@quantix/core";
import { collect, until } from "@quantix/testing";

/** One implementation of the port under test, opened once for its suite. */
export interface OpenedHypervisor {
  readonly port: HypervisorPort;
  /** A spec this hypervisor can boot. */
  readonly spec: VmSpec;
  /** Kills a VM's process behind the port's back, as a crash would; omitted when there is no way to. */
  readonly crash?: (vmId: string) => Promise<void>;
  /** Resolves once the guest handles the power button (a real guest boots for seconds first). */
  readonly guestReady?: (vmId: string) => Promise<void>;
  /** Text the guest prints on its console once booted. */
  readonly bootMarker?: string;
  /** A second hypervisor of the same kind to migrate to (with "live-migration"). */
  readonly peer?: HypervisorPort;
  cleanup(): Promise<void>;
}

/** The contract's cases, by name, so that an implementation skips one with its reason. */
export type PortCase =
  | "define" | "boot" | "graceful-shutdown" | "forced-shutdown" | "off-noop" | "delete" | "pause" | "reboot" | "suspend"
  | "preconditions" | "capabilities" | "notifications" | "crash" | "console" | "metrics" | "migration" | "watched";

/** How one implementation runs the contract. */
export interface PortContractOptions {
  /** Deadline of each wait for an observed state. Default 10 s. */
  readonly timeoutMs?: number;
  /** Cases this implementation cannot run, each with the reason the test output shows. */
  readonly skip?: Partial<Record<PortCase, string>>;
}

const GATED = ["pause", "reboot", "suspend"] as const;

/**
 * What HypervisorPort's doc comments promise (packages/core/src/hypervisor.ts), run against
 * every implementation (STYLE rule 7): idempotent calls, observe() and list() after each
 * transition, FAILED_PRECONDITION naming the state or the missing capability, change
 * notifications, and the console, metrics and migration an implementation declares.
 * One hypervisor serves the whole suite; each case uses a VM of its own and deletes it.
 */
export function hypervisorPortContract(name: string, open: () => Promise<OpenedHypervisor>, options: PortContractOptions = {}): void {
  const timeoutMs = options.timeoutMs ?? 10_000;
  describe(`HypervisorPort contract: ${name}`, () => {
    let o: OpenedHypervisor;
    let n = 0;
    before(async () => {
      o = await open();
    });
    after(() => o?.cleanup());

    const run = (id: PortCase, title: string, body: (vmId: string) => Promise<void>, unable?: () => string | undefined): void => {
      test(title, { timeout: timeoutMs * 8 }, async (t) => {
        const why = options.skip?.[id] ?? unable?.();
        if (why) return t.skip(why);
        const vmId = `port-${process.pid}-${++n}`;
        try {
          await body(vmId);
        } finally {
          await o.port.deleteVM(vmId).catch(() => undefined);
        }
      });
    };
    const lacks = (cap: Capability) => () => (o.port.capabilities.has(cap) ? undefined : `${name} does not declare "${cap}"`);
    const power = async (vmId: string) => (await o.port.observe(vmId)).power;
    /** Waits for observe() to report `want`, then for list() to agree (an agent's list follows its watch). */
    const reaches = async (vmId: string, want: ObservedPower): Promise<VmObservation> => {
      const obs = await until(async () => ((x) => (x.power === want ? x : undefined))(await o.port.observe(vmId)), `VM ${vmId} observed ${want}`, timeoutMs);
      await until(async () => ((e) => ((want === "absent" ? !e : e?.power === want) ? true : undefined))((await o.port.list()).find((v) => v.vmId === vmId)), `list() showing ${vmId} ${want}`, timeoutMs);
      // A port that answers from its watch answers the truth whenever it answers at all.
      const watched = o.port.observeWatched?.(vmId);
      if (watched) assert.deepEqual(watched, await o.port.observe(vmId), `observeWatched(${vmId}) answers what observe() does`);
      return obs;
    };
    const booted = async (vmId: string) => {
      await o.port.createVM(vmId, o.spec);
      const answer = await o.port.bootVM(vmId);
      // A boot that answers what it observes (the VM controller then skips its second look) answers the truth.
      if (answer) assert.deepEqual([answer.vmId, answer.power], [vmId, await power(vmId)]);
      const obs = await reaches(vmId, "running");
      // ... and says when the guest started, as the port says once its events caught up: the status written from the answer is whole.
      if (answer?.power === "running") assert.equal(answer.startedAt, obs.startedAt, "the boot's answer has the observed startedAt");
      return obs;
    };
    const refused = (call: Promise<unknown>, words: RegExp) =>
      assert.rejects(call, (e: unknown) => {
        assert.ok(e instanceof QuantixError, `a QuantixError, got ${String(e)}`);
        assert.equal(e.code, "failed_precondition", e.message);
        assert.match(e.message, words);
        return true;
      });
    const gatedCall = (cap: (typeof GATED)[number], vmId: string) => (cap === "pause" ? o.port.pauseVM(vmId) : cap === "reboot" ? o.port.rebootVM(vmId, false) : o.port.suspendVM(vmId));

    run("define", "createVM defines a VM, observed and listed as created; defining it again changes nothing", async (id) => {
      assert.equal(await power(id), "absent");
      await o.port.createVM(id, o.spec);
      await reaches(id, "created");
      await o.port.createVM(id, o.spec);
      await reaches(id, "created");
    });

    run("boot", "bootVM runs a created VM; booting a running VM is not an error", async (id) => {
      const obs = await booted(id);
      if (obs.startedAt !== undefined) assert.ok(obs.startedAt <= Date.now(), "startedAt is in the past");
      await o.port.bootVM(id);
      await reaches(id, "running");
    });

    run("graceful-shutdown", "shutdownVM asks the guest to power off: shut down, a second call changes nothing, bootVM starts it again", async (id) => {
      await booted(id);
      await o.guestReady?.(id);
      // The grace period is shorter than `reaches` waits: a guest too loaded to act on the
      // button in time is still seen shut down (QEMU quit after the grace), not a timeout.
      const graceSec = Math.max(1, Math.floor(timeoutMs / 2000));
      await o.port.shutdownVM(id, { force: false, timeoutSec: graceSec });
      await reaches(id, "shutdown");
      await o.port.shutdownVM(id, { force: false, timeoutSec: graceSec });
      await reaches(id, "shutdown");
      await o.port.bootVM(id);
      await reaches(id, "running");
    });

    run("forced-shutdown", "shutdownVM with force powers off at once; a second call is not an error", async (id) => {
      await booted(id);
      await o.port.shutdownVM(id, { force: true, timeoutSec: 0 });
      await reaches(id, "shutdown");
      await o.port.shutdownVM(id, { force: true, timeoutSec: 0 });
      await reaches(id, "shutdown");
    });

    run(
      "watched",
      "observeWatched answers what observe() does once observe() confirmed it, and nothing while a call on the VM runs",
      async (id) => {
        const watched = (vmId: string) => o.port.observeWatched!(vmId);
        assert.equal(watched(id), undefined, "a VM the node does not have is asked about, never answered from the watch");
        await booted(id);
        const confirmed = async () => {
          const obs = await o.port.observe(id);
          const w = watched(id);
          return w && w.power === obs.power ? { obs, w } : undefined;
        };
        const running = await until(confirmed, "observeWatched answering once observe() agreed with the watch", timeoutMs);
        assert.deepEqual(running.w, running.obs);
        assert.equal(running.w.power, "running");
        const off = o.port.shutdownVM(id, { force: true, timeoutSec: 0 });
        assert.equal(watched(id), undefined, "no answer from the watch while a shutdown runs");
        await off;
        await reaches(id, "shutdown");
        const stopped = await until(confirmed, "observeWatched answering again once observe() confirmed the shutdown", timeoutMs);
        assert.deepEqual(stopped.w, stopped.obs);
        assert.equal(stopped.w.power, "shutdown");
        await o.port.deleteVM(id);
        assert.equal(watched(id), undefined, "a deleted VM is asked about again");
      },
      () => (o.port.observeWatched ? undefined : `${name} answers every observation by asking (no observeWatched)`),
    );

    run("off-noop", "shutdownVM of a VM that was never started changes nothing", async (id) => {
      await o.port.createVM(id, o.spec);
      await o.port.shutdownVM(id, { force: false, timeoutSec: 10 });
      await o.port.shutdownVM(id, { force: true, timeoutSec: 0 });
      await reaches(id, "created");
    });

    run("delete", "deleteVM removes a running VM; deleting an absent VM is not an error", async (id) => {
      await booted(id);
      await o.port.deleteVM(id);
      await reaches(id, "absent");
      await o.port.deleteVM(id);
      await o.port.deleteVM(`${id}-never`);
      assert.equal(await power(`${id}-never`), "absent");
    });

    run("pause", "pauseVM and resumeVM move between paused and running; each again is not an error", async (id) => {
      await booted(id);
      for (const step of [() => o.port.pauseVM(id), () => o.port.pauseVM(id)]) await step().then(() => reaches(id, "paused"));
      for (const step of [() => o.port.resumeVM(id), () => o.port.resumeVM(id)]) await step().then(() => reaches(id, "running"));
    }, lacks("pause"));

    run("reboot", "rebootVM restarts the guest and keeps the VM running, with a newer start time where reported", async (id) => {
      await booted(id);
      for (const force of [false, true]) {
        const before = (await o.port.observe(id)).startedAt;
        await o.port.rebootVM(id, force);
        const again = (x: VmObservation) => x.power === "running" && (before === undefined || (x.startedAt ?? 0) > before);
        await until(async () => (again(await o.port.observe(id)) ? true : undefined), `running again after a ${force ? "forced" : "graceful"} reboot`, timeoutMs);
      }
    }, lacks("reboot"));

    run("suspend", "suspendVM saves a running VM; again is not an error; bootVM starts it again", async (id) => {
      await booted(id);
      for (const step of [() => o.port.suspendVM(id), () => o.port.suspendVM(id)]) await step().then(() => reaches(id, "suspended"));
      await o.port.bootVM(id);
      await reaches(id, "running");
    }, lacks("suspend"));

    run("preconditions", "a call the VM's state does not allow is FAILED_PRECONDITION naming the state, and changes nothing", async (id) => {
      const has = (c: Capability) => o.port.capabilities.has(c);
      await o.port.createVM(id, o.spec);
      for (const cap of GATED) if (has(cap)) await refused(gatedCall(cap, id), /created/i);
      if (has("pause")) await refused(o.port.resumeVM(id), /created/i);
      await reaches(id, "created");
      await o.port.bootVM(id);
      if (has("pause")) {
        await o.port.pauseVM(id);
        await refused(o.port.bootVM(id), /paused/i);
        await reaches(id, "paused");
        await o.port.resumeVM(id);
      }
      await o.port.shutdownVM(id, { force: true, timeoutSec: 0 });
      await reaches(id, "shutdown");
      for (const cap of ["pause", "reboot"] as const) if (has(cap)) await refused(gatedCall(cap, id), /shut ?down/i);
      await reaches(id, "shutdown");
    }, () => (GATED.some((c) => o.port.capabilities.has(c)) ? undefined : `${name} declares none of ${GATED.join(", ")}, so no call it offers depends on the state`));

    run("capabilities", "a call needing a capability the hypervisor lacks is FAILED_PRECONDITION naming it, and changes nothing", async (id) => {
      await booted(id);
      for (const cap of GATED.filter((c) => !o.port.capabilities.has(c))) {
        await refused(gatedCall(cap, id), new RegExp(`\\b${cap}\\b`));
        await reaches(id, "running");
      }
    }, () => (GATED.every((c) => o.port.capabilities.has(c)) ? `${name} declares every capability a call needs (${GATED.join(", ")})` : undefined));

    run("notifications", "onChange names the VM after each transition, until unsubscribed", async (id) => {
      const heard: string[] = [];
      const off = o.port.onChange((vmId) => heard.push(vmId));
      const notifies = async (what: string, step: () => Promise<unknown>) => {
        const from = heard.length;
        await step();
        await until(() => (heard.slice(from).includes(id) ? true : undefined), `a notification after ${what}`, timeoutMs);
      };
      await notifies("createVM", () => o.port.createVM(id, o.spec));
      await notifies("bootVM", () => o.port.bootVM(id));
      await notifies("shutdownVM", () => o.port.shutdownVM(id, { force: true, timeoutSec: 0 }));
      off();
      const stopped = heard.length;
      const later: string[] = [];
      const offLater = o.port.onChange((vmId) => later.push(vmId));
      await o.port.deleteVM(id);
      await until(() => (later.includes(id) ? true : undefined), "a notification after deleteVM", timeoutMs);
      offLater();
      assert.deepEqual(heard.slice(stopped), [], "an unsubscribed listener hears nothing more");
    });

    run("crash", "a VM whose process dies is observed crashed with the reason, listeners hear of it, and bootVM starts it again", async (id) => {
      await booted(id);
      const heard: string[] = [];
      const off = o.port.onChange((vmId) => heard.push(vmId));
      await o.crash!(id);
      const obs = await reaches(id, "crashed");
      assert.ok(obs.error, "the observation says why it crashed");
      if (!options.skip?.notifications) await until(() => (heard.includes(id) ? true : undefined), "a notification of the crash", timeoutMs);
      off();
      await o.port.bootVM(id);
      await reaches(id, "running");
    }, () => (o.crash ? undefined : `${name} gives the contract no way to kill a VM's process`));

    run("console", "the console's output() and follow() show what the guest prints", async (id) => {
      await booted(id);
      const c = o.port.console!;
      const text = (d: Uint8Array) => new TextDecoder().decode(d);
      await until(async () => ((t) => (t.length > 0 && (!o.bootMarker || t.includes(o.bootMarker)) ? true : undefined))(text((await c.output(id, 65_536)).data)), "console output", timeoutMs);
      const ac = new AbortController();
      const chunks = await collect(c.follow(id, ac.signal), (got) => got.some((d) => d.length > 0), timeoutMs);
      ac.abort();
      assert.ok(chunks.some((d) => d.length > 0), "follow() yields new output");
    }, () => lacks("console")() ?? (o.port.console ? undefined : `${name} declares "console" but has no console`));

    run("metrics", "metrics sample() measures a running VM; an unknown VM is NOT_FOUND", async (id) => {
      await booted(id);
      assert.equal((await o.port.metrics!.sample(id)).power, "running");
      await assert.rejects(o.port.metrics!.sample(`${id}-never`), (e: unknown) => e instanceof QuantixError && e.code === "not_found");
    }, () => lacks("metrics")() ?? (o.port.metrics ? undefined : `${name} declares "metrics" but has no sampler`));

    run("migration", "a running VM migrates live to the peer: prepared there, then running there and gone here", async (id) => {
      const peer = o.peer!;
      try {
        await booted(id);
        const target = await peer.migration!.prepare(id, o.spec, (await o.port.migration!.planCopies?.(id)) ?? []);
        assert.notEqual((await peer.observe(id)).power, "absent", "the target defines the VM");
        const seen: string[] = [];
        await o.port.migration!.migrate(id, target, { maxDowntimeMs: 0, bandwidthMbps: 0 }, (p) => seen.push(p.status), new AbortController().signal);
        assert.ok(seen.length > 0, "progress was reported");
        await until(async () => ((await peer.observe(id)).power === "running" ? true : undefined), "the VM running on the peer", timeoutMs);
        await reaches(id, "absent");
      } finally {
        await peer.deleteVM(id).catch(() => undefined);
      }
    }, () => lacks("live-migration")() ?? (o.peer?.migration && o.port.migration ? undefined : `${name} gives the contract no second hypervisor to migrate to`));
  });
}
