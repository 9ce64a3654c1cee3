import { QuantixError } from "@quantix/core";
import type { NodePool, NodeStorage, NodeVolume } from "./node-storage.js";

/**
 * The adapter point for a host agent's vmm.v1.StorageService (the storage-agent branch):
 * at the merge, each method becomes the matching agent call over the node's connection
 * (EnsurePool, DeletePool, CreateVolume, ResizeVolume, DeleteVolume, GetVolume; byte sizes as they
 * are, formats and pool types mapped one to one). Until then every call answers
 * FAILED_PRECONDITION saying so, rather than pretending: a volume on an agent node then
 * shows ERROR with that reason.
 */
export class AgentNodeStorage implements NodeStorage {
  readonly kind = "agent";

  constructor(private readonly nodeId: string) {}

  ensurePool(): Promise<NodePool> {
    return Promise.reject(this.notWired());
  }
  deletePool(): Promise<void> {
    return Promise.reject(this.notWired());
  }
  createVolume(): Promise<NodeVolume> {
    return Promise.reject(this.notWired());
  }
  resizeVolume(): Promise<NodeVolume> {
    return Promise.reject(this.notWired());
  }
  deleteVolume(): Promise<void> {
    return Promise.reject(this.notWired());
  }
  volumeInfo(): Promise<NodeVolume | undefined> {
    return Promise.reject(this.notWired());
  }

  private notWired(): QuantixError {
    return new QuantixError("failed_precondition", `node '${this.nodeId}' runs a host agent, and the agent's storage service is not wired yet`);
  }
}

/** NodeStorage of a node whose storage has no place to live (a simulated host without QUANTIX_STORAGE_DIR). */
export class UnavailableNodeStorage implements NodeStorage {
  readonly kind = "unavailable";

  constructor(private readonly reason: string) {}

  ensurePool(): Promise<NodePool> {
    return Promise.reject(new QuantixError("failed_precondition", this.reason));
  }
  deletePool(): Promise<void> {
    return Promise.reject(new QuantixError("failed_precondition", this.reason));
  }
  createVolume(): Promise<NodeVolume> {
    return Promise.reject(new QuantixError("failed_precondition", this.reason));
  }
  resizeVolume(): Promise<NodeVolume> {
    return Promise.reject(new QuantixError("failed_precondition", this.reason));
  }
  deleteVolume(): Promise<void> {
    return Promise.reject(new QuantixError("failed_precondition", this.reason));
  }
  volumeInfo(): Promise<NodeVolume | undefined> {
    return Promise.reject(new QuantixError("failed_precondition", this.reason));
  }
}
