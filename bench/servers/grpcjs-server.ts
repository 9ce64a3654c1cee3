import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { GetVMRequestSchema, type GetVMRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { demoNodes, demoVms, MemoryStore } from "@quantix/server";
import { VM_KIND, NODE_KIND } from "@quantix/core";

// The established alternative: @grpc/grpc-js serving GetVM from the same MemoryStore,
// seeded with the same demo data, (de)serialising with protobuf-es.

const definition: grpc.ServiceDefinition = {
  getVM: {
    path: "/Quantixkvm.compute.v1.VMService/GetVM",
    originalName: "GetVM",
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: GetVMRequest) => Buffer.from(toBinary(GetVMRequestSchema, m)),
    requestDeserialize: (b: Buffer) => fromBinary(GetVMRequestSchema, b),
    responseSerialize: (vm: VirtualMachine) => Buffer.from(toBinary(VirtualMachineSchema, vm)),
    responseDeserialize: (b: Buffer) => fromBinary(VirtualMachineSchema, b),
  } satisfies grpc.MethodDefinition<GetVMRequest, VirtualMachine>,
};

const store = new MemoryStore();
const now = Date.now();
for (const n of demoNodes(now)) await store.of(NODE_KIND).create(n);
for (const vm of demoVms(now)) await store.of(VM_KIND).create(vm);

const server = new grpc.Server();
server.addService(definition, {
  getVM: (call: grpc.ServerUnaryCall<GetVMRequest, VirtualMachine>, callback: grpc.sendUnaryData<VirtualMachine>) => {
    store.of(VM_KIND).get(call.request.id).then(
      (vm) => (vm ? callback(null, vm) : callback({ code: grpc.status.NOT_FOUND, details: `VM '${call.request.id}' not found` })),
      (err: unknown) => callback({ code: grpc.status.INTERNAL, details: String(err) }),
    );
  },
});
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
