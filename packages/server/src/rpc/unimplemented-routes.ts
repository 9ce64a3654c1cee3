import type { ConnectRouter } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { unimplemented } from "./errors.js";

/**
 * Serves every method of a service that no issue has built yet with UNIMPLEMENTED and a
 * message saying what brings it, never invented data.
 */
export function registerUnimplemented(router: ConnectRouter, service: DescService, arrivesWith: string): void {
  const impl: Record<string, unknown> = {};
  for (const m of service.methods) {
    const err = () => unimplemented(`${service.typeName}/${m.name}`, arrivesWith);
    switch (m.methodKind) {
      case "unary":
      case "client_streaming":
        impl[m.localName] = async () => {
          throw err();
        };
        break;
      case "server_streaming":
      case "bidi_streaming":
        impl[m.localName] = async function* () {
          throw err();
        };
        break;
    }
  }
  router.service(service, impl as never);
}
