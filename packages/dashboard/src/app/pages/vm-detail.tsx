import { useEffect, useState } from "react";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { client, errorText } from "../client.js";
import { useLive } from "../live.js";
import { Link, navigate } from "../router.js";
import { mib, time, vmState } from "../format.js";
import { EventTable } from "./overview.js";
import { Console } from "./console.js";
import { Spark } from "./chart.js";

const vms = client(VMService);
const KEEP = 60;
/** How long a power action waits for the node before the page shows its transitional state. */
const POWER_WAIT_MS = 5000;

/** Live CPU, memory and disk samples from StreamMetrics (while the VM runs; the reason when it cannot). */
function Metrics({ vmId, running }: { vmId: string; running: boolean }) {
  const [cpu, setCpu] = useState<number[]>([]);
  const [mem, setMem] = useState<number[]>([]);
  const [disk, setDisk] = useState<number[]>([]);
  const [note, setNote] = useState<string>();
  useEffect(() => {
    if (!running) {
      setNote("Metrics are sampled while the VM runs.");
      return;
    }
    const ctl = new AbortController();
    setNote(undefined);
    void (async () => {
      let prev: { bytes: number; at: number } | undefined;
      try {
        for await (const u of vms.streamMetrics({ vmId, intervalSec: 2 }, { signal: ctl.signal })) {
          const push = (set: typeof setCpu, v: number) => set((a) => [...a, v].slice(-KEEP));
          push(setCpu, u.cpuUsagePercent);
          push(setMem, Number(u.memoryUsedMib));
          const bytes = Number(u.diskReadBytes + u.diskWriteBytes), at = Date.now();
          push(setDisk, prev ? Math.max(0, (bytes - prev.bytes) / Math.max(0.001, (at - prev.at) / 1000) / 1024) : 0);
          prev = { bytes, at };
        }
      } catch (err) {
        if (!ctl.signal.aborted) setNote(errorText(err));
      }
    })();
    return () => ctl.abort();
  }, [vmId, running]);
  return (
    <section aria-labelledby="metrics-h">
      <h2 id="metrics-h">Usage</h2>
      {note && <p className="muted">{note}</p>}
      <div className="charts">
        <Spark label="CPU" values={cpu} unit="%" max={100} />
        <Spark label="Memory used" values={mem} unit="MiB" />
        <Spark label="Disk I/O" values={disk} unit="KiB/s" />
      </div>
    </section>
  );
}

export function VmDetail({ id, tab }: { id: string; tab: string | undefined }) {
  const live = useLive();
  const vm = live.vms.get(id);
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string }>();
  const [busy, setBusy] = useState<string>();
  const [target, setTarget] = useState("");
  if (!vm) return <p>{live.state === "live" ? `There is no VM ${id} (deleted?).` : "Loading…"} <Link to="/vms">All VMs</Link></p>;
  const state = vmState(vm.status?.state);
  const run = async (label: string, f: () => Promise<unknown>, after?: () => void) => {
    setBusy(label);
    setOutcome(undefined);
    try {
      const r = await f();
      const st = r && typeof r === "object" && "status" in r ? vmState((r as { status?: { state?: number } }).status?.state) : undefined;
      setOutcome({ ok: true, text: `${label}: accepted${st ? ` (${st})` : ""}` });
      after?.();
    } catch (err) {
      setOutcome({ ok: false, text: `${label} failed: ${errorText(err)}` });
    } finally {
      setBusy(undefined);
    }
  };
  const targets = [...live.nodes.values()].filter((n) => n.id !== vm.status?.nodeId && n.status?.phase === NodeStatus_Phase.READY);
  // Power actions answer once the node observed the result, or shortly before the deadline
  // with the VM in its transitional state: a short one keeps the page responsive (the watch
  // shows the rest). Migrate gets none: its caller going away cancels the migration.
  const quick = { timeoutMs: POWER_WAIT_MS };
  const actions: [string, () => Promise<unknown>][] = [
    ["Start", () => vms.startVM({ id }, quick)],
    ["Stop", () => vms.stopVM({ id }, quick)],
    ["Reboot", () => vms.rebootVM({ id }, quick)],
    ["Pause", () => vms.pauseVM({ id }, quick)],
    ["Resume", () => vms.resumeVM({ id }, quick)],
    ["Suspend", () => vms.suspendVM({ id }, quick)],
  ];
  const events = [...live.events.values()].filter((e) => e.objectId === id).sort((a, b) => Number(b.resourceVersion - a.resourceVersion)).slice(0, 30);
  const running = ["RUNNING", "PAUSED", "MIGRATING"].includes(state);
  return (
    <>
      <div className="title-row">
        <h1>
          {vm.name} <span className={`badge state-${state}`} data-testid="vm-state">{state}</span>
        </h1>
        <nav className="tabs" aria-label="VM">
          <Link to={`/vms/${encodeURIComponent(id)}`}>Details</Link>
          <Link to={`/vms/${encodeURIComponent(id)}/console`}>Console</Link>
        </nav>
      </div>
      <div className="actions" role="group" aria-label="Actions">
        {actions.map(([label, f]) => (
          <button key={label} disabled={busy !== undefined} onClick={() => void run(label, f)}>{label}</button>
        ))}
        <label className="inline">
          Migrate to
          <select value={target} onChange={(e) => setTarget(e.target.value)}>
            <option value="">scheduler's choice</option>
            {targets.map((n) => <option key={n.id} value={n.id}>{n.hostname}</option>)}
          </select>
        </label>
        <button disabled={busy !== undefined} onClick={() => void run("Migrate", () => vms.migrateVM({ vmId: id, targetNodeId: target, live: true }))}>Migrate</button>
        <button className="danger" disabled={busy !== undefined} onClick={() => { if (confirm(`Delete VM ${vm.name}?`)) void run("Delete", () => vms.deleteVM({ id }), () => navigate("/vms")); }}>Delete</button>
      </div>
      <p role="status" aria-live="polite" className={outcome ? (outcome.ok ? "ok" : "error") : "muted"} data-testid="outcome">
        {busy ? `${busy}…` : (outcome?.text ?? "")}
      </p>
      {tab === "console" ? (
        <Console vmId={id} />
      ) : (
        <>
          <div className="grid">
            <section className="card" aria-labelledby="spec-h">
              <h2 id="spec-h">Spec</h2>
              <dl>
                <dt>vCPUs</dt><dd>{vm.spec?.cpu?.cores ?? 0}</dd>
                <dt>Memory</dt><dd>{mib(vm.spec?.memory?.sizeMib)}</dd>
                <dt>Disks</dt><dd>{vm.spec?.disks.map((d) => `${d.id} ${d.sizeGib ? `${d.sizeGib} GiB` : ""} ${d.volumeId || d.imageId || d.hostPath}`).join(", ") || "none"}</dd>
                <dt>NICs</dt><dd>{vm.spec?.nics.map((n) => `${n.id} ${n.networkId || n.portId}`).join(", ") || "none"}</dd>
                <dt>Project</dt><dd>{vm.projectId}</dd>
                <dt>Description</dt><dd>{vm.description || "—"}</dd>
              </dl>
            </section>
            <section className="card" aria-labelledby="status-h">
              <h2 id="status-h">Status</h2>
              <dl>
                <dt>State</dt><dd>{state}</dd>
                <dt>Node</dt><dd>{vm.status?.nodeId ? <Link to={`/nodes/${encodeURIComponent(vm.status.nodeId)}`}>{live.nodes.get(vm.status.nodeId)?.hostname ?? vm.status.nodeId}</Link> : "—"}</dd>
                <dt>Addresses</dt><dd>{vm.status?.ipAddresses.join(", ") || "—"}</dd>
                <dt>Started</dt><dd>{time(vm.status?.startedAt)}</dd>
                {vm.status?.errorMessage && (<><dt>Error</dt><dd className="error">{vm.status.errorMessage}</dd></>)}
              </dl>
            </section>
          </div>
          <section aria-labelledby="cond-h">
            <h2 id="cond-h">Conditions</h2>
            <ul className="conditions" data-testid="conditions">
              {vm.status?.conditions.map((c) => (
                <li key={c.type} className={c.status === ConditionStatus.FALSE ? "warn" : undefined}>
                  <strong>{c.type}</strong> {ConditionStatus[c.status]} {c.reason && <em>({c.reason})</em>}
                  {c.message && <p className="message">{c.message}</p>}
                </li>
              ))}
            </ul>
          </section>
          <Metrics vmId={id} running={running} />
          <section aria-labelledby="vmev-h">
            <h2 id="vmev-h">Events</h2>
            <EventTable events={events} />
          </section>
        </>
      )}
    </>
  );
}
