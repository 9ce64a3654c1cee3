import { join } from "node:path";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { UnavailableNodeStorage } from "./agent-node-storage.js";
import { DirNodeStorage } from "./dir-node-storage.js";
import type { DirImporterFactory, DirUploaderFactory, NodeStorage } from "./node-storage.js";

/**
 * Picks the NodeStorage of each node (one instance per node, kept): the demo's simulated
 * hosts (hypervisor "simulated", no agent endpoint) keep their pools in this process,
 * under `<storageDir>/<node id>` with the real qemu-img; a node with a host agent gets
 * its agent's StorageService (AgentNodeStorage, on the agent connection this replica
 * keeps), or, while this replica is not connected to that agent, an answer saying so.
 */
export class NodeStorages {
  private readonly byNode = new Map<string, NodeStorage>();

  constructor(
    private readonly o: {
      storageDir: string | undefined;
      sharedDirs: readonly string[];
      qemuImg?: string;
      /** The agent's import code for the simulated hosts' pools (the composition root's); absent: they refuse imports. */
      dirImporter?: DirImporterFactory;
      /** The agent's upload code for the simulated hosts' pools (the composition root's); absent: they refuse uploads. */
      dirUploader?: DirUploaderFactory;
      /** The storage of a node's connected agent; undefined while this replica has no connection to it. */
      agentStorage: (nodeId: string) => NodeStorage | undefined;
    },
  ) {}

  /** The NodeStorage of `node`. */
  of(node: Node): NodeStorage {
    const simulated = node.status?.hypervisor?.type === "simulated" && (node.spec?.agentEndpoint ?? "") === "";
    if (!simulated) return this.o.agentStorage(node.id) ?? new UnavailableNodeStorage(`node '${node.id}' runs a host agent this control plane is not connected to (yet): see the node's status`, "unavailable");
    let s = this.byNode.get(node.id);
    if (!s) {
      if (!this.o.storageDir) s = new UnavailableNodeStorage(`simulated node '${node.id}' has no storage directory: start the control plane with the embedded store or QUANTIX_STORAGE_DIR`);
      else {
        const root = join(this.o.storageDir, node.id);
        s = new DirNodeStorage({
          nodeId: node.id,
          root,
          sharedDirs: this.o.sharedDirs,
          ...(this.o.qemuImg ? { qemuImg: this.o.qemuImg } : {}),
          ...(this.o.dirImporter ? { importer: this.o.dirImporter(root) } : {}),
          ...(this.o.dirUploader ? { uploader: this.o.dirUploader(root) } : {}),
        });
      }
      this.byNode.set(node.id, s);
    }
    return s;
  }
}
