import { openBootFiles, type StandInEffects, type StandInMachine, type StandInReply } from "./stand-in-machine.js";

type Body = Record<string, unknown>;
type ChState = "Created" | "Running" | "Shutdown" | "Paused";

/**
 * Cloud Hypervisor's VM state machine: vm.create, then boot/pause/resume/reboot/shutdown,
 * answering 404 before vm.create and 405 in a wrong state, as the spec README says.
 */
export class CloudHypervisorMachine implements StandInMachine {
  private config: Body | undefined;
  private state: ChState = "Created";

  constructor(private readonly effects: StandInEffects) {}

  /** The file serial output goes to when the VM config asked for serial mode File. */
  serialFile(): string | undefined {
    const serial = this.config?.serial as Body | undefined;
    return serial?.mode === "File" && typeof serial.file === "string" ? serial.file : undefined;
  }

  guestRunning(): boolean {
    return this.config !== undefined && this.state === "Running";
  }

  refusal(status: number, problem: string): StandInReply {
    return { status, problem };
  }

  handle(method: string, template: string, _params: Readonly<Record<string, string>>, body: unknown): StandInReply {
    switch (template) {
      case "/vmm.ping":
        return { status: 200, body: { version: "v53.0-standin", build_version: "v53.0-standin", pid: process.pid } };
      case "/vmm.shutdown":
        this.effects.exitSoon(0);
        return { status: 204 };
      case "/vm.create":
        if (this.config) return this.refusal(405, "vm.create: a VM is already created");
        this.config = body as Body;
        this.state = "Created";
        return { status: 204 };
      case "/vm.delete":
        this.config = undefined;
        this.state = "Created";
        return { status: 204 };
      case "/vm.info":
        if (!this.config) return this.refusal(404, "vm.info: no VM is created");
        return { status: 200, body: { config: this.config, state: this.state } };
      default:
        return this.transition(template);
    }
  }

  private transition(template: string): StandInReply {
    if (!this.config) return this.refusal(404, `${template.slice(1)}: no VM is created`);
    const from = this.state;
    const to = this.next(template, from);
    if (to === undefined) {
      return template === "/vm.boot" || this.isKnown(template)
        ? this.refusal(405, `${template.slice(1)} is not allowed in state ${from}`)
        : this.refusal(400, `the stand-in does not implement ${template}`);
    }
    if (template === "/vm.boot") {
      const payload = (this.config.payload ?? {}) as Body;
      const disks = (this.config.disks ?? []) as Body[];
      const opened = openBootFiles([{ what: "kernel", path: payload.kernel }, { what: "initramfs", path: payload.initramfs }, ...disks.map((d) => ({ what: `disk ${String(d.id)}`, path: d.path }))]);
      if (opened.problem) return this.refusal(500, `vm.boot: ${opened.problem}`);
      this.state = to;
      this.effects.console("[stand-in cloud-hypervisor] guest booting");
      for (const line of opened.lines) this.effects.console(`[stand-in cloud-hypervisor] ${line}`);
    }
    this.state = to;
    if (template === "/vm.reboot") this.effects.console("[stand-in cloud-hypervisor] guest rebooting");
    if (template === "/vm.power-button") {
      // The guest reacts to the ACPI power button by powering off, and Cloud Hypervisor
      // exits when its guest powers off.
      this.effects.console("[stand-in cloud-hypervisor] power button: the guest is powering off");
      this.effects.exitSoon(0);
    }
    return { status: 204 };
  }

  private isKnown(template: string): boolean {
    return ["/vm.boot", "/vm.shutdown", "/vm.pause", "/vm.resume", "/vm.reboot", "/vm.power-button"].includes(template);
  }

  private next(template: string, from: ChState): ChState | undefined {
    switch (template) {
      case "/vm.boot":
        return from === "Created" || from === "Shutdown" ? "Running" : undefined;
      case "/vm.shutdown":
        return from === "Running" || from === "Paused" ? "Shutdown" : undefined;
      case "/vm.pause":
        return from === "Running" ? "Paused" : undefined;
      case "/vm.resume":
        return from === "Paused" ? "Running" : undefined;
      case "/vm.reboot":
      case "/vm.power-button":
        return from === "Running" ? "Running" : undefined;
      default:
        return undefined;
    }
  }
}
