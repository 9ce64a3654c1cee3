import { memo, useMemo, useState } from "react";
import { useLive } from "../live.js";
import { Link } from "../router.js";
import { mib, vmState } from "../format.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

type SortKey = "name" | "state" | "node" | "cpu" | "memory" | "created";
const PAGE_SIZES = [50, 200, 1000];

const keyOf: Record<SortKey, (v: VirtualMachine) => string | number> = {
  name: (v) => v.name,
  state: (v) => vmState(v.status?.state),
  node: (v) => v.status?.nodeId ?? "",
  cpu: (v) => v.spec?.cpu?.cores ?? 0,
  memory: (v) => Number(v.spec?.memory?.sizeMib ?? 0),
  created: (v) => Number(v.createdAt?.seconds ?? 0),
};

/** Every VM, live from WatchVMs: filtered, sorted and paged here (the list is already in the page). */
export function VmList() {
  const live = useLive();
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "name", desc: false });
  const [page, setPage] = useState(0);
  const [PAGE, setPageSize] = useState(50);
  const rows = useMemo(() => {
    const f = filter.trim().toLowerCase();
    const all = [...live.vms.values()].filter((v) => !f || v.name.toLowerCase().includes(f) || v.description.toLowerCase().includes(f) || v.id.includes(f) || vmState(v.status?.state).toLowerCase().includes(f) || (v.status?.nodeId ?? "").includes(f));
    const k = keyOf[sort.key];
    all.sort((a, b) => {
      const x = k(a), y = k(b);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return (sort.desc ? -c : c) || a.id.localeCompare(b.id);
    });
    return all;
  }, [live.vms, filter, sort]);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  const p = Math.min(page, pages - 1);
  const nodeName = (id: string | undefined) => (id ? (live.nodes.get(id)?.hostname ?? id) : "—");
  const header = (key: SortKey, label: string) => (
    <th scope="col" aria-sort={sort.key === key ? (sort.desc ? "descending" : "ascending") : "none"}>
      <button className="link" onClick={() => setSort({ key, desc: sort.key === key ? !sort.desc : false })}>
        {label} {sort.key === key ? (sort.desc ? "▼" : "▲") : ""}
      </button>
    </th>
  );
  return (
    <>
      <div className="title-row">
        <h1>Virtual machines</h1>
        <Link to="/vms/new" className="button">Create VM</Link>
      </div>
      <label className="inline">
        Filter
        <input type="search" value={filter} onChange={(e) => { setFilter(e.target.value); setPage(0); }} placeholder="name, state, node" />
      </label>{" "}
      <label className="inline">
        Rows per page
        <select value={PAGE} onChange={(e) => { setPageSize(Number(e.target.value)); setPage(0); }}>
          {PAGE_SIZES.map((n) => <option key={n} value={n}>{n}</option>)}
        </select>
      </label>
      <div className="scroll">
        <table data-testid="vm-table">
          <thead>
            <tr>
              {header("name", "Name")}
              {header("state", "State")}
              {header("node", "Node")}
              {header("cpu", "vCPU")}
              {header("memory", "Memory")}
              {header("created", "Created")}
              <th scope="col">Description</th>
            </tr>
          </thead>
          <tbody>
            {rows.slice(p * PAGE, (p + 1) * PAGE).map((v) => (
              <VmRow key={v.id} v={v} node={nodeName(v.status?.nodeId)} />
            ))}
          </tbody>
        </table>
      </div>
      <nav className="pager" aria-label="Pages">
        <button onClick={() => setPage(p - 1)} disabled={p === 0}>Previous</button>
        <span>Page {p + 1} of {pages} ({rows.length} VMs)</span>
        <button onClick={() => setPage(p + 1)} disabled={p >= pages - 1}>Next</button>
      </nav>
    </>
  );
}

/** One row; re-rendered only when its VM object (replaced on every change by the watch) or its node's name changes. */
const VmRow = memo(function VmRow({ v, node }: { v: VirtualMachine; node: string }) {
  return (
    <tr data-vm={v.name}>
      <td><Link to={`/vms/${encodeURIComponent(v.id)}`}>{v.name}</Link></td>
      <td><span className={`badge state-${vmState(v.status?.state)}`} data-testid={`state-${v.name}`}>{vmState(v.status?.state)}</span></td>
      <td>{node}</td>
      <td className="num">{v.spec?.cpu?.cores ?? 0}</td>
      <td className="num">{mib(v.spec?.memory?.sizeMib)}</td>
      <td>{v.createdAt ? new Date(Number(v.createdAt.seconds) * 1000).toLocaleString() : ""}</td>
      <td className="muted">{v.description}</td>
    </tr>
  );
});
