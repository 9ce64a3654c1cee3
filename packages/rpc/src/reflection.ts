/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) as a Connect service, so
 * that tools such as `buf curl`, grpcurl and Postman can discover and call our API
 * without a local copy of the .proto files.
 */
import {
  create,
  fromBinary,
  toBinary,
  type DescExtension,
  type DescFile,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "@quantix/api/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "@quantix/api/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { procedures } from "./routes.js";

/** gRPC status codes carried in ErrorResponse.error_code (google.rpc.Code numbering). */
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

type Response = NonNullable<MessageInitShape<typeof v1.ServerReflectionResponseSchema>["messageResponse"]>;

/** Everything a reflection request can ask about, computed once per registration. */
interface ReflectionIndex {
  /** Fully-qualified names of the services we advertise, in registration order. */
  readonly services: readonly string[];
  /** File name (e.g. "google/protobuf/empty.proto") -> file, for every reachable file. */
  readonly files: ReadonlyMap<string, DescFile>;
  /** Fully-qualified symbol (type, service, method, extension) -> declaring file. */
  readonly symbols: ReadonlyMap<string, DescFile>;
  /** Message type name -> extensions of it; a key exists for every known message. */
  readonly extensionsOf: ReadonlyMap<string, readonly DescExtension[]>;
  /** File name -> serialized FileDescriptorProto, so requests never re-encode. */
  readonly encoded: ReadonlyMap<string, Uint8Array>;
}

/**
 * Registers gRPC server reflection on `router`, under both
 * `grpc.reflection.v1.ServerReflection` and `grpc.reflection.v1alpha.ServerReflection`
 * (older clients only speak v1alpha).
 *
 * `files` are the top-level files whose services should be discoverable, e.g.
 * `file_Quantixkvm_compute_v1_vm_service`. Their imports (including google/protobuf
 * well-known types) are found by walking `DescFile.dependencies`, so callers do not
 * have to list them. The index is built here, once, and shared by every stream. Returns
 * the procedures it serves.
 *
 * @example
 *   connectNodeAdapter({ routes: (router) => {
 *     router.service(NodeService, nodeImpl);
 *     registerReflection(router, [file_Quantixkvm_compute_v1_node_service]);
 *   } });
 */
export function registerReflection(router: ConnectRouter, files: readonly DescFile[]): string[] {
  const index = buildIndex(files);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) yield answer(index, request);
    },
  });
  // v1alpha is wire-identical to v1, so re-decode across the schemas and reuse the
  // v1 logic instead of maintaining a second copy of it.
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const alpha of requests) {
        const request = fromBinary(
          v1.ServerReflectionRequestSchema,
          toBinary(v1alpha.ServerReflectionRequestSchema, alpha),
        );
        const response = answer(index, request);
        yield fromBinary(
          v1alpha.ServerReflectionResponseSchema,
          toBinary(v1.ServerReflectionResponseSchema, response),
        );
      }
    },
  });
  return procedures([v1.ServerReflection, v1alpha.ServerReflection]);
}

function buildIndex(roots: readonly DescFile[]): ReflectionIndex {
  // The reflection files themselves are indexed too, so a client that lists the
  // reflection services can also describe them (grpcurl `describe` does this).
  const reflectionFiles = [v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection];
  const files = new Map<string, DescFile>();
  const visit = (file: DescFile): void => {
    if (files.has(fileName(file))) return;
    files.set(fileName(file), file);
    file.dependencies.forEach(visit);
  };
  [...roots, ...reflectionFiles].forEach(visit);

  const symbols = new Map<string, DescFile>();
  const extensionsOf = new Map<string, DescExtension[]>();
  const encoded = new Map<string, Uint8Array>();
  for (const file of files.values()) {
    encoded.set(fileName(file), toBinary(FileDescriptorProtoSchema, file.proto));
    for (const desc of nestedTypes(file)) {
      symbols.set(desc.typeName, file);
      if (desc.kind === "service") {
        for (const method of desc.methods) symbols.set(`${desc.typeName}.${method.name}`, file);
      } else if (desc.kind === "message" && !extensionsOf.has(desc.typeName)) {
        extensionsOf.set(desc.typeName, []);
      } else if (desc.kind === "extension") {
        // The extendee may be declared in another file, visited before or after this one.
        const list = extensionsOf.get(desc.extendee.typeName) ?? [];
        extensionsOf.set(desc.extendee.typeName, [...list, desc]);
      }
    }
  }

  // Only the caller's own files are advertised: dependencies (e.g. a common package)
  // may declare services that are not actually served here.
  const services = new Set<string>();
  for (const file of [...roots, ...reflectionFiles]) file.services.forEach((svc) => services.add(svc.typeName));

  return { services: [...services], files, symbols, extensionsOf, encoded };
}

/** Builds the response for one request; failures are in-band so the stream stays open. */
function answer(index: ReflectionIndex, request: v1.ServerReflectionRequest): v1.ServerReflectionResponse {
  return create(v1.ServerReflectionResponseSchema, {
    validHost: request.host,
    originalRequest: request,
    messageResponse: respond(index, request.messageRequest),
  });
}

function respond(index: ReflectionIndex, req: v1.ServerReflectionRequest["messageRequest"]): Response {
  switch (req.case) {
    case "listServices":
      return {
        case: "listServicesResponse",
        value: { service: index.services.map((name) => ({ name })) },
      };
    case "fileByFilename": {
      const file = index.files.get(req.value);
      return file ? fileResponse(index, file) : notFound(`file not found: ${req.value}`);
    }
    case "fileContainingSymbol": {
      const file = index.symbols.get(stripDot(req.value));
      return file ? fileResponse(index, file) : notFound(`symbol not found: ${req.value}`);
    }
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = req.value;
      const ext = index.extensionsOf.get(stripDot(containingType))?.find((e) => e.number === extensionNumber);
      return ext
        ? fileResponse(index, ext.file)
        : notFound(`extension ${extensionNumber} of ${containingType} not found`);
    }
    case "allExtensionNumbersOfType": {
      const name = stripDot(req.value);
      const exts = index.extensionsOf.get(name);
      if (!exts) return notFound(`message type not found: ${req.value}`);
      return {
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: name, extensionNumber: exts.map((e) => e.number) },
      };
    }
    default:
      return {
        case: "errorResponse",
        value: { errorCode: INVALID_ARGUMENT, errorMessage: "no message_request set" },
      };
  }
}

/**
 * The requested file first, then its transitive imports, each exactly once: clients
 * build their descriptor pool from this single response, so it must be complete.
 */
function fileResponse(index: ReflectionIndex, file: DescFile): Response {
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  const visit = (f: DescFile): void => {
    if (seen.has(fileName(f))) return;
    seen.add(fileName(f));
    out.push(index.encoded.get(fileName(f)) ?? toBinary(FileDescriptorProtoSchema, f.proto));
    f.dependencies.forEach(visit);
  };
  visit(file);
  return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
}

function notFound(message: string): Response {
  return { case: "errorResponse", value: { errorCode: NOT_FOUND, errorMessage: message } };
}

/** The path clients ask for; DescFile.name drops the ".proto" suffix, proto.name keeps it. */
function fileName(file: DescFile): string {
  return file.proto.name;
}

/** Some clients send ".pkg.Type" (the descriptor-reference form); index keys have no dot. */
function stripDot(name: string): string {
  return name.startsWith(".") ? name.slice(1) : name;
}
