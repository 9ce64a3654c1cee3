import type { DescService } from "@bufbuild/protobuf";
import { unimplemented, type Route } from "@quantix/rpc";

/**
 * Serves every method of a service that no issue has built yet with UNIMPLEMENTED and a
 * message saying what brings it, never invented data.
 */
export function unimplementedImpl(service: DescService, arrivesWith: string): Route["impl"] {
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
  return impl as Route["impl"];
}
