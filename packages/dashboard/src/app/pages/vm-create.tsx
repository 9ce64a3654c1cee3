import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { client } from "../client.js";
import { ViolationForm, type FormField } from "../form.js";
import { navigate } from "../router.js";

const vms = client(VMService);

/** The form's inputs and the request field each one fills (the server's violations name these). */
const FIELDS: readonly FormField[] = [
  { name: "name", label: "Name", field: "name", initial: "" },
  { name: "cores", label: "vCPUs", field: "spec.cpu.cores", type: "number", initial: "1" },
  { name: "memory", label: "Memory (MiB)", field: "spec.memory.size_mib", type: "number", initial: "512" },
  { name: "disk", label: "Disk (GiB, 0 for none)", field: "spec.disks[0].size_gib", type: "number", initial: "0" },
  { name: "description", label: "Description", field: "description", initial: "" },
  { name: "start", label: "Start it once created", field: "start_on_create", type: "checkbox" },
];

/** Creates a VM; validation is the server's: each field violation is shown next to its input. */
export function VmCreate() {
  return (
    <>
      <h1>Create a VM</h1>
      <ViolationForm
        id="f"
        title="Create a VM"
        fields={FIELDS}
        submitLabel="Create"
        onSubmit={async (f) => {
          const disk = f.num("disk");
          const vm = await vms.createVM({
            name: f.text("name"),
            description: f.text("description"),
            startOnCreate: f.on("start"),
            spec: { cpu: { cores: f.num("cores") }, memory: { sizeMib: BigInt(Math.max(0, Math.trunc(f.num("memory")))) }, disks: disk > 0 ? [{ id: "root", sizeGib: BigInt(Math.trunc(disk)) }] : [] },
          });
          navigate(`/vms/${encodeURIComponent(vm.id)}`);
        }}
      />
    </>
  );
}
