import { openBootFiles, type StandInEffects, type StandInMachine, type StandInReply } from "./stand-in-machine.js";

type Body = Record<string, unknown>;

// PUTs that configure a device or resource: Firecracker accepts them only before
// InstanceStart ("Pre-boot only" in the spec's summaries).
const preBootPuts = new Set([
  "/boot-source", "/machine-config", "/drives/{drive_id}", "/network-interfaces/{iface_id}", "/logger",
  "/serial", "/metrics", "/cpu-config", "/entropy", "/vsock", "/balloon", "/pmem/{id}", "/mmds/config",
]);

/** Firecracker's microVM state machine: configure, InstanceStart exactly once, pause/resume, Ctrl+Alt+Del. */
export class FirecrackerMachine implements StandInMachine {
  private state: "Not started" | "Running" | "Paused" = "Not started";
  private machine: Body = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false };
  private bootSource: Body | undefined;
  private readonly drives = new Map<string, Body>();
  private readonly nets = new Map<string, Body>();
  private readonly other = new Map<string, Body>();

  constructor(private readonly id: string, private readonly effects: StandInEffects) {}

  /** The path serial output goes to, once PUT /serial named one. */
  serialOutPath(): string | undefined {
    const serial = this.other.get("/serial");
    return typeof serial?.serial_out_path === "string" ? serial.serial_out_path : undefined;
  }

  guestRunning(): boolean {
    return this.state === "Running";
  }

  refusal(status: number, problem: string): StandInReply {
    return { status, body: { fault_message: problem }, problem };
  }

  handle(method: string, template: string, params: Readonly<Record<string, string>>, body: unknown): StandInReply {
    const b = (body ?? {}) as Body;
    if (method === "GET") return this.get(template);
    if (method === "PUT" && preBootPuts.has(template)) {
      if (this.state !== "Not started") return this.refusal(400, `The requested operation is not supported after starting the microVM: PUT ${template}`);
      return this.configure(template, params, b);
    }
    if (method === "PUT" && template === "/actions") return this.action(String(b.action_type));
    if (method === "PATCH" && template === "/vm") {
      if (this.state === "Not started") return this.refusal(400, "The requested operation is not supported before starting the microVM: PATCH /vm");
      this.state = b.state === "Paused" ? "Paused" : "Running";
      return { status: 204 };
    }
    return this.refusal(400, `the stand-in does not implement ${method} ${template}`);
  }

  private configure(template: string, params: Readonly<Record<string, string>>, b: Body): StandInReply {
    switch (template) {
      case "/machine-config":
        this.machine = { smt: false, track_dirty_pages: false, ...b };
        return { status: 204 };
      case "/boot-source":
        this.bootSource = b;
        return { status: 204 };
      case "/drives/{drive_id}":
        if (b.drive_id !== params.drive_id) return this.refusal(400, "The id from the path does not match the id from the body");
        if (b.is_root_device === true && [...this.drives.values()].some((d) => d.is_root_device === true && d.drive_id !== b.drive_id)) {
          return this.refusal(400, "A root block device already exists");
        }
        this.drives.set(params.drive_id, b);
        return { status: 204 };
      case "/network-interfaces/{iface_id}":
        if (b.iface_id !== params.iface_id) return this.refusal(400, "The id from the path does not match the id from the body");
        this.nets.set(params.iface_id, b);
        return { status: 204 };
      default:
        this.other.set(template, b);
        return { status: 204 };
    }
  }

  private action(type: string): StandInReply {
    switch (type) {
      case "InstanceStart":
        if (this.state !== "Not started") return this.refusal(400, "The microVM is already running: InstanceStart was sent twice");
        if (!this.bootSource) return this.refusal(400, "Cannot start microvm without kernel configuration.");
        const opened = openBootFiles([
          { what: "kernel", path: this.bootSource.kernel_image_path },
          { what: "initrd", path: this.bootSource.initrd_path },
          ...[...this.drives.values()].map((d) => ({ what: `drive ${String(d.drive_id)}`, path: d.path_on_host })),
        ]);
        if (opened.problem) return this.refusal(400, `Failed to start microVM: ${opened.problem}`);
        this.state = "Running";
        this.effects.console(`[stand-in firecracker] booting ${String(this.bootSource.kernel_image_path)} with ${String(this.machine.vcpu_count)} vCPUs`);
        for (const line of opened.lines) this.effects.console(`[stand-in firecracker] ${line}`);
        return { status: 204 };
      case "SendCtrlAltDel":
        if (this.state === "Not started") return this.refusal(400, "SendCtrlAltDel needs a started microVM");
        // The guest reacts to Ctrl+Alt+Del by rebooting, and Firecracker exits on a guest reboot.
        this.effects.console("[stand-in firecracker] Ctrl+Alt+Del: the guest is going down");
        this.effects.exitSoon(0);
        return { status: 204 };
      case "FlushMetrics":
        if (!this.other.has("/metrics")) return this.refusal(400, "FlushMetrics needs PUT /metrics first");
        return { status: 204 };
      default:
        return this.refusal(400, `unknown action ${type}`);
    }
  }

  private get(template: string): StandInReply {
    switch (template) {
      case "/":
        return { status: 200, body: { app_name: "Firecracker", id: this.id, state: this.state, vmm_version: "1.17.0-standin" } };
      case "/version":
        return { status: 200, body: { firecracker_version: "1.17.0-standin" } };
      case "/machine-config":
        return { status: 200, body: this.machine };
      case "/vm/config":
        return {
          status: 200,
          body: {
            "machine-config": this.machine,
            ...(this.bootSource ? { "boot-source": this.bootSource } : {}),
            drives: [...this.drives.values()],
            "network-interfaces": [...this.nets.values()],
          },
        };
      default:
        return this.refusal(400, `the stand-in does not implement GET ${template}`);
    }
  }
}
