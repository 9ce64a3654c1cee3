import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { Logger } from "@quantix/server/log.js";
import { observeAndMapErrors } from "@quantix/server/rpc/interceptors.js";
import type { VmManager } from "../vm-manager.js";
import { vmServiceImpl } from "./vm-routes.js";

/** vmm.v1 as the agent serves it: the service and the interceptors every call runs through. */
export interface VmmRouter {
  readonly routes: (router: ConnectRouter) => void;
  readonly interceptors: Interceptor[];
}

/**
 * The one definition of how vmm.v1 is served, whether over the agent's port
 * (agent-server.ts) or in memory to a control plane in the same process
 * (simulated-host.ts): the same error mapping and log line for every call either way.
 */
export function vmmRouter(manager: VmManager, backendVersion: string, log: Logger): VmmRouter {
  return {
    routes: (router) => router.service(VmService, vmServiceImpl(manager, backendVersion)),
    interceptors: [observeAndMapErrors(log)],
  };
}
