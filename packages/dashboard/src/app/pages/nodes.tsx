import { useEffect, useState } from "react";
import type { NodeUsage } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { Spark } from "./chart.js";
import { useQuery } from "@connectrpc/connect-query";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { DrainStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { client, errorText } from "../client.js";
import { useLive } from "../live.js";
import { Link } from "../router.js";
import { mib, nodePhase, time, vmState } from "../format.js";
import { Bar, EventTable, NodeCapacity } from "./overview.js";

const nodes = client(NodeService);

export function NodeList() {
  const live = useLive();
  const all = [...live.nodes.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
  return (
    <>
      <h1>Nodes</h1>
      <div className="scroll">
        <table>
          <thead>
            <tr><th scope="col">Host</th><th scope="col">Phase</th><th scope="col">Schedulable</th><th scope="col">vCPU allocated</th><th scope="col">Memory allocated</th><th scope="col">VMs</th><th scope="col">Heartbeat</th></tr>
          </thead>
          <tbody>
            {all.map((n) => (
              <tr key={n.id}>
                <td><Link to={`/nodes/${encodeURIComponent(n.id)}`}>{n.hostname}</Link></td>
                <td><span className={`badge phase-${nodePhase(n.status?.phase)}`}>{nodePhase(n.status?.phase)}</span></td>
                <td>{n.spec?.schedulable ? "yes" : "no"}</td>
                <td className="num">{n.status?.allocated?.cpuCores ?? 0} / {n.status?.allocatable?.cpuCores ?? 0}</td>
                <td className="num">{mib(n.status?.allocated?.memoryMib)} / {mib(n.status?.allocatable?.memoryMib)}</td>
                <td className="num">{n.status?.vmIds.length ?? 0}</td>
                <td>{time(n.status?.lastHeartbeat)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

/** The node's usage over time: a sample each time its status (heartbeats, GetNodeMetrics) brings a new one. */
function UsageCharts({ usage }: { usage: NodeUsage | undefined }) {
  const [cpu, setCpu] = useState<number[]>([]);
  const [mem, setMem] = useState<number[]>([]);
  useEffect(() => {
    if (!usage) return;
    setCpu((a) => [...a, usage.cpuUsagePercent].slice(-60));
    setMem((a) => [...a, Number(usage.memoryUsedMib)].slice(-60));
  }, [usage]);
  return (
    <div className="charts">
      <Spark label="CPU" values={cpu} unit="%" max={100} />
      <Spark label="Memory used" values={mem} unit="MiB" max={Number(usage?.memoryTotalMib ?? 0)} />
    </div>
  );
}

export function NodeDetail({ id }: { id: string }) {
  const live = useLive();
  const node = live.nodes.get(id);
  const metrics = useQuery(NodeService.method.getNodeMetrics, { id }, { refetchInterval: false });
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string }>();
  const [busy, setBusy] = useState(false);
  const [force, setForce] = useState(false);
  if (!node) return <p>{live.state === "live" ? `There is no node ${id}.` : "Loading…"} <Link to="/nodes">All nodes</Link></p>;
  const run = async (label: string, f: () => Promise<unknown>) => {
    setBusy(true);
    setOutcome(undefined);
    try {
      await f();
      setOutcome({ ok: true, text: `${label}: accepted` });
    } catch (err) {
      setOutcome({ ok: false, text: `${label} failed: ${errorText(err)}` });
    } finally {
      setBusy(false);
    }
  };
  const drain = node.status?.drain;
  const usage = node.status?.usage ?? metrics.data?.usage;
  const name = (vmId: string) => live.vms.get(vmId)?.name ?? vmId;
  const events = [...live.events.values()].filter((e) => e.objectId === id).sort((a, b) => Number(b.resourceVersion - a.resourceVersion)).slice(0, 20);
  const total = drain ? drain.migratedVmIds.length + drain.stoppedVmIds.length + drain.failures.length + drain.remainingVmIds.length : 0;
  return (
    <>
      <h1>
        {node.hostname} <span className={`badge phase-${nodePhase(node.status?.phase)}`} data-testid="node-phase">{nodePhase(node.status?.phase)}</span>
      </h1>
      <div className="actions" role="group" aria-label="Actions">
        <button disabled={busy} onClick={() => void run("Drain", () => nodes.drainNode({ id, force }))}>Drain</button>
        <label className="check">
          <input type="checkbox" checked={force} onChange={(e) => setForce(e.target.checked)} /> stop the VMs that cannot migrate
        </label>
        <button disabled={busy} onClick={() => void run("Enable", () => nodes.enableNode({ id }))}>Enable</button>
        <button disabled={busy} onClick={() => void run("Disable", () => nodes.disableNode({ id }))}>Disable</button>
      </div>
      <p role="status" aria-live="polite" className={outcome ? (outcome.ok ? "ok" : "error") : "muted"}>{busy ? "working…" : (outcome?.text ?? "")}</p>
      {drain && drain.sequence > 0n && (
        <section className="card" aria-labelledby="drain-h" data-testid="drain">
          <h2 id="drain-h">Drain #{String(drain.sequence)}: <span data-testid="drain-phase">{DrainStatus_Phase[drain.phase]}</span></h2>
          <Bar label="Done" used={total - drain.remainingVmIds.length} total={total} text={`${total - drain.remainingVmIds.length} of ${total} VMs`} />
          <ul>
            {drain.migratedVmIds.map((v) => <li key={`m${v}`}>migrated {name(v)}</li>)}
            {drain.stoppedVmIds.map((v) => <li key={`s${v}`}>stopped {name(v)}</li>)}
            {drain.remainingVmIds.map((v) => <li key={`r${v}`}>waiting: {name(v)}</li>)}
            {drain.failures.map((f) => <li key={`f${f.vmId}`} className="error">{name(f.vmId)}: {f.reason}</li>)}
          </ul>
        </section>
      )}
      <div className="grid">
        <section className="card" aria-labelledby="cap-h">
          <h2 id="cap-h">Capacity and allocation</h2>
          <NodeCapacity node={node} />
          {usage && (
            <>
              <Bar label="CPU used" used={usage.cpuUsagePercent} total={100} text={`${usage.cpuUsagePercent.toFixed(1)} %`} />
              <Bar label="Memory used" used={Number(usage.memoryUsedMib)} total={Number(usage.memoryTotalMib || node.status?.capacity?.memoryMib || 1n)} text={mib(usage.memoryUsedMib)} />
              <p className="muted">load {usage.loadAverage1m.toFixed(2)} / {usage.loadAverage5m.toFixed(2)} / {usage.loadAverage15m.toFixed(2)}</p>
            </>
          )}
          {metrics.error && <p className="muted">Metrics: {errorText(metrics.error)}</p>}
          <UsageCharts usage={usage} />
        </section>
        <section className="card" aria-labelledby="info-h">
          <h2 id="info-h">Host</h2>
          <dl>
            <dt>Address</dt><dd>{node.managementIp}</dd>
            <dt>CPU</dt><dd>{node.spec?.cpu?.model} ({node.spec?.cpu?.logicalCpus} logical)</dd>
            <dt>Hypervisor</dt><dd>{node.status?.hypervisor?.type} {node.status?.hypervisor?.version}</dd>
            <dt>Schedulable</dt><dd>{node.spec?.schedulable ? "yes" : "no"}</dd>
            <dt>Taints</dt><dd>{node.spec?.taints.map((t) => `${t.key}=${t.value}:${TaintEffect[t.effect]}`).join(", ") || "none"}</dd>
            <dt>Heartbeat</dt><dd>{time(node.status?.lastHeartbeat)}</dd>
          </dl>
        </section>
      </div>
      <section aria-labelledby="nvm-h">
        <h2 id="nvm-h">VMs on this node</h2>
        <ul>
          {node.status?.vmIds.map((v) => <li key={v}><Link to={`/vms/${encodeURIComponent(v)}`}>{name(v)}</Link> {vmState(live.vms.get(v)?.status?.state)}</li>)}
        </ul>
      </section>
      <section aria-labelledby="nev-h">
        <h2 id="nev-h">Events</h2>
        <EventTable events={events} />
      </section>
    </>
  );
}
