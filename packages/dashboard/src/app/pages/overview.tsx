import { useLive } from "../live.js";
import { Link } from "../router.js";
import { mib, nodePhase, pct, time, vmState } from "../format.js";
import { Severity } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";

export function Bar({ label, used, total, text }: { label: string; used: number; total: number; text: string }) {
  return (
    <div className="bar-row">
      <span>{label}</span>
      <meter min={0} max={total || 1} value={used} aria-label={`${label} ${text}`} />
      <span className="num">{text}</span>
    </div>
  );
}

export function NodeCapacity({ node }: { node: Node }) {
  const cap = node.status?.allocatable ?? node.status?.capacity;
  const alloc = node.status?.allocated;
  return (
    <>
      <Bar label="vCPU" used={alloc?.cpuCores ?? 0} total={cap?.cpuCores ?? 0} text={`${alloc?.cpuCores ?? 0} / ${cap?.cpuCores ?? 0}`} />
      <Bar label="Memory" used={Number(alloc?.memoryMib ?? 0)} total={Number(cap?.memoryMib ?? 0)} text={`${mib(alloc?.memoryMib)} / ${mib(cap?.memoryMib)} (${pct(Number(alloc?.memoryMib ?? 0), Number(cap?.memoryMib ?? 0))}%)`} />
    </>
  );
}

export function Overview() {
  const live = useLive();
  const nodes = [...live.nodes.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
  const byState = new Map<string, number>();
  for (const vm of live.vms.values()) byState.set(vmState(vm.status?.state), (byState.get(vmState(vm.status?.state)) ?? 0) + 1);
  const events = [...live.events.values()].sort((a, b) => Number((b.time?.seconds ?? 0n) - (a.time?.seconds ?? 0n)) || Number(b.resourceVersion - a.resourceVersion)).slice(0, 15);
  return (
    <>
      <h1>Overview</h1>
      <section aria-labelledby="nodes-h">
        <h2 id="nodes-h">Nodes ({nodes.length})</h2>
        <div className="grid">
          {nodes.map((n) => (
            <article className="card" key={n.id} data-testid={`node-card-${n.hostname}`}>
              <h3>
                <Link to={`/nodes/${encodeURIComponent(n.id)}`}>{n.hostname}</Link>{" "}
                <span className={`badge phase-${nodePhase(n.status?.phase)}`}>{nodePhase(n.status?.phase)}</span>
                {n.spec && !n.spec.schedulable && <span className="badge">disabled</span>}
              </h3>
              <NodeCapacity node={n} />
              <p className="muted">{n.status?.vmIds.length ?? 0} VMs</p>
            </article>
          ))}
        </div>
      </section>
      <section aria-labelledby="vms-h">
        <h2 id="vms-h">
          <Link to="/vms">VMs</Link> ({live.vms.size})
        </h2>
        <ul className="states" data-testid="vm-states">
          {[...byState.entries()].sort().map(([s, n]) => (
            <li key={s} className={`badge state-${s}`}>
              {s}: {n}
            </li>
          ))}
        </ul>
      </section>
      <section aria-labelledby="ev-h">
        <h2 id="ev-h">Recent events</h2>
        <EventTable events={events} />
      </section>
    </>
  );
}

export function EventTable({ events }: { events: readonly import("@quantix/api/gen/Quantixkvm/event/v1/event_pb.js").Event[] }) {
  if (events.length === 0) return <p className="muted">No events.</p>;
  return (
    <div className="scroll">
      <table>
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Object</th>
            <th scope="col">Reason</th>
            <th scope="col">Message</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.id} className={e.severity === Severity.WARNING ? "warn" : undefined}>
              <td>{time(e.time)}</td>
              <td>
                {e.objectKind} {e.objectName || e.objectId}
              </td>
              <td>{e.reason}</td>
              <td>{e.message}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
