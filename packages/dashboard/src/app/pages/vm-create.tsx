import { useState, type FormEvent } from "react";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { client, errorText, fieldViolations } from "../client.js";
import { navigate } from "../router.js";

const vms = client(VMService);

/** The form's inputs and the request field each one fills (the server's violations name these). */
const FIELDS = [
  { name: "name", label: "Name", field: "name", type: "text", initial: "" },
  { name: "cores", label: "vCPUs", field: "spec.cpu.cores", type: "number", initial: "1" },
  { name: "memory", label: "Memory (MiB)", field: "spec.memory.size_mib", type: "number", initial: "512" },
  { name: "disk", label: "Disk (GiB, 0 for none)", field: "spec.disks[0].size_gib", type: "number", initial: "0" },
  { name: "description", label: "Description", field: "description", type: "text", initial: "" },
] as const;

/** Creates a VM; validation is the server's: each field violation is shown next to its input. */
export function VmCreate() {
  const [violations, setViolations] = useState<Map<string, string>>(new Map());
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const num = (k: string) => Number(f.get(k) || 0);
    setBusy(true);
    setError(undefined);
    try {
      const disk = num("disk");
      const vm = await vms.createVM({
        name: String(f.get("name") ?? ""),
        description: String(f.get("description") ?? ""),
        startOnCreate: f.get("start") === "on",
        spec: { cpu: { cores: num("cores") }, memory: { sizeMib: BigInt(Math.max(0, Math.trunc(num("memory")))) }, disks: disk > 0 ? [{ id: "root", sizeGib: BigInt(Math.trunc(disk)) }] : [] },
      });
      navigate(`/vms/${encodeURIComponent(vm.id)}`);
    } catch (err) {
      const v = fieldViolations(err);
      setViolations(v);
      const known = new Set<string>(FIELDS.map((x) => x.field));
      const rest = [...v].filter(([k]) => !known.has(k));
      setError(v.size === 0 ? errorText(err) : rest.length ? rest.map(([k, d]) => `${k}: ${d}`).join("; ") : "Please correct the fields marked below.");
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <h1>Create a VM</h1>
      <form className="card form" onSubmit={submit} noValidate aria-describedby={error ? "create-error" : undefined}>
        {error && <p id="create-error" role="alert" className="error">{error}</p>}
        {FIELDS.map((x) => {
          const v = violations.get(x.field);
          return (
            <div className="field" key={x.name}>
              <label htmlFor={`f-${x.name}`}>{x.label}</label>
              <input id={`f-${x.name}`} name={x.name} type={x.type} defaultValue={x.initial} aria-invalid={v ? true : undefined} aria-describedby={v ? `e-${x.name}` : undefined} />
              {v && <span id={`e-${x.name}`} className="error" data-field={x.field}>{v}</span>}
            </div>
          );
        })}
        <label className="check">
          <input type="checkbox" name="start" /> Start it once created
        </label>
        <button type="submit" disabled={busy}>Create</button>
      </form>
    </>
  );
}
