import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AgentVmViews } from "./agent-vm-views.js";

const nics = [{ id: "eth0", portId: "p1" }];

/** A call that runs until `end()` is called. */
function pending(): { promise: Promise<void>; end: () => void } {
  let end!: () => void;
  const promise = new Promise<void>((resolve) => (end = resolve));
  return { promise, end };
}

describe("AgentVmViews: when the watch may stand for a GetVmInfo", () => {
  it("an answer that agrees with the watch, with its NICs, makes the view fresh; one that disagrees does not", () => {
    const v = new AgentVmViews();
    assert.equal(v.freshNics("vm-1"), undefined, "nothing confirmed yet");
    v.confirm(v.mark("vm-1"), false, nics);
    assert.equal(v.freshNics("vm-1"), undefined, "the watch said otherwise");
    v.confirm(v.mark("vm-1"), true, nics);
    assert.deepEqual(v.freshNics("vm-1"), nics);
  });

  it("a call on the VM makes it stale at once; an answer asked before or during the call confirms nothing", async () => {
    const v = new AgentVmViews();
    v.confirm(v.mark("vm-1"), true, nics);
    const before = v.mark("vm-1");
    const call = pending();
    const acting = v.acting("vm-1", () => call.promise);
    assert.equal(v.freshNics("vm-1"), undefined, "stale while the call runs");
    const during = v.mark("vm-1");
    v.confirm(during, true, nics);
    assert.equal(v.freshNics("vm-1"), undefined, "an answer during the call confirms nothing");
    call.end();
    const [, mark] = await acting;
    v.confirm(before, true, nics);
    assert.equal(v.freshNics("vm-1"), undefined, "an answer asked before the call confirms nothing");
    v.confirm(mark, true);
    assert.deepEqual(v.freshNics("vm-1"), nics, "the call's own answer confirms it (a boot keeps the NICs)");
  });

  it("a call's answer confirms nothing when another call on the VM ran meanwhile", async () => {
    const v = new AgentVmViews();
    v.confirm(v.mark("vm-1"), true, nics);
    const first = pending();
    const second = pending();
    const a = v.acting("vm-1", () => first.promise);
    const b = v.acting("vm-1", () => second.promise);
    second.end();
    const [, markB] = await b;
    v.confirm(markB, true, nics);
    assert.equal(v.freshNics("vm-1"), undefined, "the first call still runs");
    first.end();
    const [, markA] = await a;
    assert.equal(markA, undefined, "the second call ran during the first");
    v.confirm(v.mark("vm-1"), true, nics);
    assert.deepEqual(v.freshNics("vm-1"), nics, "a new answer after both confirms it");
  });

  it("a call that may change the NICs forgets them: only an answer that says them makes the view fresh again", async () => {
    const v = new AgentVmViews();
    v.confirm(v.mark("vm-1"), true, nics);
    const [, mark] = await v.acting("vm-1", async () => undefined, true);
    v.confirm(mark, true);
    assert.equal(v.freshNics("vm-1"), undefined);
    v.confirm(v.mark("vm-1"), true, []);
    assert.deepEqual(v.freshNics("vm-1"), []);
  });

  it("a call on any VM (a migration) makes every view stale while it runs, and answers asked meanwhile confirm nothing", async () => {
    const v = new AgentVmViews();
    v.confirm(v.mark("vm-1"), true, nics);
    const call = pending();
    const migrating = v.acting(undefined, () => call.promise);
    assert.equal(v.freshNics("vm-1"), undefined);
    const during = v.mark("vm-1");
    call.end();
    await migrating;
    v.confirm(during, true, nics);
    assert.equal(v.freshNics("vm-1"), undefined);
    v.confirm(v.mark("vm-1"), true, nics);
    assert.deepEqual(v.freshNics("vm-1"), nics);
  });

  it("a reset (the watch broke or synced again) and a VM gone from the watch make views stale, also for answers in flight", () => {
    const v = new AgentVmViews();
    v.confirm(v.mark("vm-1"), true, nics);
    const asked = v.mark("vm-1");
    v.reset();
    assert.equal(v.freshNics("vm-1"), undefined);
    v.confirm(asked, true, nics);
    assert.equal(v.freshNics("vm-1"), undefined, "asked before the reset");
    v.confirm(v.mark("vm-1"), true, nics);
    const asked2 = v.mark("vm-1");
    v.gone("vm-1");
    assert.equal(v.freshNics("vm-1"), undefined);
    v.confirm(asked2, true, nics);
    assert.equal(v.freshNics("vm-1"), undefined, "asked before the VM went: its view was made again since");
  });

  it("an answer the watch had not caught up with: the next event confirms it if it says the same, else it stays stale", async () => {
    const RUNNING = 2;
    const SHUTDOWN = 4;
    const v = new AgentVmViews();
    v.confirm(v.mark("vm-1"), true, nics);
    const [, boot] = await v.acting("vm-1", async () => undefined);
    v.confirm(boot, false, undefined, RUNNING);
    assert.equal(v.freshNics("vm-1"), undefined, "the watch still says the state from before");
    v.seen("vm-1", RUNNING);
    assert.deepEqual(v.freshNics("vm-1"), nics, "its next event says what the boot answered");

    const [, again] = await v.acting("vm-1", async () => undefined);
    v.confirm(again, false, undefined, RUNNING);
    v.seen("vm-1", SHUTDOWN);
    v.seen("vm-1", RUNNING);
    assert.equal(v.freshNics("vm-1"), undefined, "only the first event after the answer may confirm it");

    const [, third] = await v.acting("vm-1", async () => undefined);
    v.confirm(third, false, undefined, RUNNING);
    await v.acting("vm-1", async () => undefined);
    v.seen("vm-1", RUNNING);
    assert.equal(v.freshNics("vm-1"), undefined, "a call since the answer: the event may be older than its effect");
  });
});
