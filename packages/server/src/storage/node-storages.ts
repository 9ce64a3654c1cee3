import { join } from "node:path";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { AgentNodeStorage, UnavailableNodeStorage } from "./agent-node-storage.js";
import { DirNodeStorage } from "./dir-node-storage.js";
import type { NodeStorage } from "./node-storage.js";

/**
 * Picks the NodeStorage of each node (one instance per node, kept): the demo's simulated
 * hosts (hypervisor "simulated", no agent endpoint) keep their pools in this process,
 * under `<storageDir>/<node id>` with the real qemu-img; a node with a host agent gets
 * the agent adapter (AgentNodeStorage), where the agent's StorageService is wired at
 * the merge with the storage-agent branch.
 */
export class NodeStorages {
  private readonly byNode = new Map<string, NodeStorage>();

  constructor(private readonly o: { storageDir: string | undefined; sharedDirs: readonly string[]; qemuImg?: string }) {}

  /** The NodeStorage of `node`. */
  of(node: Node): NodeStorage {
    const simulated = node.status?.hypervisor?.type === "simulated" && (node.spec?.agentEndpoint ?? "") === "";
    const key = `${node.id}/${simulated ? "sim" : "agent"}`;
    let s = this.byNode.get(key);
    if (!s) {
      if (!simulated) s = new AgentNodeStorage(node.id);
      else if (!this.o.storageDir) s = new UnavailableNodeStorage(`simulated node '${node.id}' has no storage directory: start the control plane with the embedded store or QUANTIX_STORAGE_DIR`);
      else s = new DirNodeStorage({ nodeId: node.id, root: join(this.o.storageDir, node.id), sharedDirs: this.o.sharedDirs, ...(this.o.qemuImg ? { qemuImg: this.o.qemuImg } : {}) });
      this.byNode.set(key, s);
    }
    return s;
  }
}
