import type { DescService } from "@bufbuild/protobuf";
import { QuantixError } from "@quantix/core";
import { unimplemented, type Route } from "@quantix/rpc";

/**
 * Serves every method of a service that no issue has built yet with UNIMPLEMENTED and a
 * message saying what brings it, never invented data.
 */
export function unimplementedImpl(service: DescService, arrivesWith: string): Route["impl"] {
  return refuseAll(service, (procedure) => unimplemented(procedure, arrivesWith));
}

/**
 * Serves every method of a service that another process serves (vmm.v1.VmService, the
 * host agents') with UNIMPLEMENTED saying where to call it instead.
 */
export function servedElsewhereImpl(service: DescService, where: string): Route["impl"] {
  return refuseAll(service, (procedure) => new QuantixError("unimplemented", `${procedure} is not served by the control plane: ${where}`));
}

function refuseAll(service: DescService, error: (procedure: string) => Error): Route["impl"] {
  const impl: Record<string, unknown> = {};
  for (const m of service.methods) {
    const err = () => error(`${service.typeName}/${m.name}`);
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
  return impl as Route["impl"];
}
