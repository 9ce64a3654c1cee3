import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { create, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import {
  file_Quantixkvm_compute_v1_node_service,
  NodeService,
} from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { file_Quantixkvm_compute_v1_vm_service } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "@quantix/api/gen/grpc/reflection/v1/reflection_pb.js";

import { registerReflection } from "./reflection.js";

const execFileAsync = promisify(execFile);
const BUF = fileURLToPath(new URL("../../../node_modules/.bin/buf", import.meta.url));

function routes(router: ConnectRouter): void {
  // A tiny NodeService so buf curl has something real to call once reflection has
  // resolved the schema; the id is echoed to prove the request was decoded.
  router.service(NodeService, {
    getNode(req) {
      return create(NodeSchema, {
        id: req.id,
        hostname: "node-1",
        managementIp: "10.0.0.1",
        labels: { rack: "r1" },
        createdAt: timestampFromDate(new Date("2024-01-02T03:04:05Z")),
      });
    },
  });
  registerReflection(router, [file_Quantixkvm_compute_v1_vm_service, file_Quantixkvm_compute_v1_node_service]);
}

describe("gRPC server reflection", () => {
  let server: http2.Http2Server;
  let baseUrl = "";
  const sessions = new Set<http2.ServerHttp2Session>();

  before(async () => {
    server = http2.createServer(connectNodeAdapter({ routes }));
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    // Clients may keep HTTP/2 sessions alive; close() alone would wait for them.
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  });

  async function bufCurl(...args: string[]): Promise<string> {
    const { stdout } = await execFileAsync(
      BUF,
      ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args],
      { timeout: 30_000 },
    );
    return stdout;
  }

  for (const reflectProtocol of ["grpc-v1", "grpc-v1alpha"]) {
    describe(`buf curl with --reflect-protocol ${reflectProtocol}`, () => {
      it("lists methods of the registered services", async () => {
        const out = await bufCurl("--reflect-protocol", reflectProtocol, "--list-methods", baseUrl);
        const methods = out.split("\n").filter(Boolean);
        assert.ok(methods.includes("Quantixkvm.compute.v1.NodeService/GetNode"), out);
        assert.ok(methods.some((m) => m.startsWith("Quantixkvm.compute.v1.VMService/")), out);
        assert.ok(methods.includes("grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), out);
        assert.ok(methods.includes("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"), out);
      });

      it("calls GetNode using the reflected schema", async () => {
        const out = await bufCurl(
          "--reflect-protocol",
          reflectProtocol,
          "-d",
          '{"id":"x"}',
          `${baseUrl}/Quantixkvm.compute.v1.NodeService/GetNode`,
        );
        assert.deepEqual(JSON.parse(out), {
          id: "x",
          hostname: "node-1",
          managementIp: "10.0.0.1",
          labels: { rack: "r1" },
          createdAt: "2024-01-02T03:04:05Z",
        });
      });
    });
  }

  it("answers a v1 stream directly, keeping it open after NOT_FOUND", async () => {
    const transport = createGrpcTransport({ baseUrl }) // gRPC over HTTP/2 (the only option in connect-node v2);
    const client = createClient(ServerReflection, transport);
    const req = (messageRequest: ServerReflectionRequest["messageRequest"]) =>
      create(ServerReflectionRequestSchema, { host: "quantix.test", messageRequest });
    const requests = [
      req({ case: "listServices", value: "" }),
      req({ case: "fileContainingSymbol", value: "Quantixkvm.compute.v1.VmSpec" }),
      req({ case: "fileContainingSymbol", value: "Quantixkvm.compute.v1.NoSuchThing" }),
      req({ case: "fileContainingSymbol", value: "Quantixkvm.compute.v1.NodeService.GetNode" }),
      req({ case: "fileContainingSymbol", value: "Quantixkvm.compute.v1.NodeStatus.Phase" }),
      req({ case: "fileByFilename", value: "google/protobuf/field_mask.proto" }),
      req({ case: "fileByFilename", value: "nope.proto" }),
      req({ case: "allExtensionNumbersOfType", value: "Quantixkvm.compute.v1.VmSpec" }),
      req({ case: "allExtensionNumbersOfType", value: "nope.Missing" }),
    ];
    const responses: ServerReflectionResponse[] = [];
    for await (const res of client.serverReflectionInfo(
      (async function* () {
        yield* requests;
      })(),
    )) {
      responses.push(res);
    }
    assert.equal(responses.length, requests.length);
    responses.forEach((res, i) => {
      assert.equal(res.validHost, "quantix.test");
      assert.deepEqual(res.originalRequest?.messageRequest, requests[i]?.messageRequest);
    });
    const [list, vmSpec, unknown, method, nestedEnum, fieldMask, unknownFile, extNums, extUnknown] = responses;

    assert.equal(list?.messageResponse.case, "listServicesResponse");
    const names = list.messageResponse.value.service.map((s) => s.name).sort();
    assert.deepEqual(names, [
      "Quantixkvm.compute.v1.NodeService",
      "Quantixkvm.compute.v1.VMService",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);

    const fileNames = (res: ServerReflectionResponse | undefined): string[] => {
      assert.equal(res?.messageResponse.case, "fileDescriptorResponse");
      return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
    };
    const vmFiles = fileNames(vmSpec);
    assert.equal(vmFiles[0], "Quantixkvm/compute/v1/vm.proto");
    assert.deepEqual(
      [...vmFiles].sort(),
      ["Quantixkvm/common/v1/common.proto", "Quantixkvm/compute/v1/vm.proto", "google/protobuf/timestamp.proto"],
    );
    assert.equal(vmFiles.filter((n) => n === "google/protobuf/timestamp.proto").length, 1);

    const nodeServiceFiles = fileNames(method);
    assert.equal(nodeServiceFiles[0], "Quantixkvm/compute/v1/node_service.proto");
    for (const dep of ["google/protobuf/empty.proto", "google/protobuf/field_mask.proto", "google/protobuf/timestamp.proto", "Quantixkvm/compute/v1/vm.proto"]) {
      assert.equal(nodeServiceFiles.filter((n) => n === dep).length, 1, dep);
    }
    assert.equal(new Set(nodeServiceFiles).size, nodeServiceFiles.length);
    assert.equal(fileNames(nestedEnum)[0], "Quantixkvm/compute/v1/node.proto");
    assert.deepEqual(fileNames(fieldMask), ["google/protobuf/field_mask.proto"]);

    for (const [res, name] of [[unknown, "Quantixkvm.compute.v1.NoSuchThing"], [unknownFile, "nope.proto"], [extUnknown, "nope.Missing"]] as const) {
      assert.equal(res?.messageResponse.case, "errorResponse");
      assert.equal(res.messageResponse.value.errorCode, 5);
      assert.match(res.messageResponse.value.errorMessage, new RegExp(name.replace(/\./g, "\\.")));
    }

    assert.equal(extNums?.messageResponse.case, "allExtensionNumbersResponse");
    assert.equal(extNums.messageResponse.value.baseTypeName, "Quantixkvm.compute.v1.VmSpec");
    assert.deepEqual(extNums.messageResponse.value.extensionNumber, []);
  });
});
