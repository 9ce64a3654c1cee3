import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { mapErrors, observeCalls, route, type Logger, type Route } from "@quantix/rpc";
import type { VmManager } from "../vm-manager.js";
import { vmServiceImpl } from "./vm-routes.js";

/** vmm.v1's route: the service with its implementation over a VM manager. */
export function vmmRoute(manager: VmManager, backendVersion: string): Route {
  return route(VmService, vmServiceImpl(manager, backendVersion));
}

/** vmm.v1 as served in memory: the route and the interceptors every call runs through. */
export interface VmmRouter {
  readonly routes: (router: ConnectRouter) => void;
  readonly interceptors: Interceptor[];
}

/**
 * vmm.v1 for a control plane in the same process (simulated-host.ts): the agent's route
 * with the chain the RPC kit puts in front of every served call (observeCalls, then
 * mapErrors), so a call answers and logs as it would over the agent's port.
 */
export function vmmRouter(manager: VmManager, backendVersion: string, log: Logger): VmmRouter {
  const r = vmmRoute(manager, backendVersion);
  return {
    routes: (router) => router.service(r.service, r.impl),
    interceptors: [observeCalls({ log }), mapErrors()],
  };
}
