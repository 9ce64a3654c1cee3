import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";

/**
 * One unary call from a real @grpc/grpc-js client, its messages encoded by protobuf-es:
 * `path` is "/pkg.Service/Method". Rejects with grpc-js's ServiceError.
 */
export function grpcJsUnary<I extends DescMessage, O extends DescMessage>(
  target: string,
  credentials: grpc.ChannelCredentials,
  path: string,
  input: I,
  output: O,
  request: MessageInitShape<I>,
  channelOptions: grpc.ChannelOptions = {},
): Promise<MessageShape<O>> {
  const method = {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(output, m)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
  };
  const Client = grpc.makeGenericClientConstructor({ Call: method }, "Unary");
  const client = new Client(target, credentials, channelOptions) as unknown as grpc.Client & { Call: (req: MessageShape<I>, options: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: MessageShape<O>) => void) => void };
  return new Promise<MessageShape<O>>((resolve, reject) => {
    client.Call(create(input, request), { deadline: Date.now() + 5000 }, (e, res) => (e ? reject(e) : resolve(res)));
  }).finally(() => client.close());
}

/**
 * A bidirectional stream from a real @grpc/grpc-js client: write requests with `write`,
 * close the sending side with `end`; `responses` yields what the server sends, and
 * rejects with grpc-js's ServiceError when the call fails. `cancel` ends it from here.
 */
export function grpcJsBidi<I extends DescMessage, O extends DescMessage>(
  target: string,
  credentials: grpc.ChannelCredentials,
  path: string,
  input: I,
  output: O,
  metadata: Record<string, string> = {},
): { write(request: MessageInitShape<I>): void; end(): void; cancel(): void; responses: AsyncIterable<MessageShape<O>> } {
  const method = {
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(output, m)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
  };
  const Client = grpc.makeGenericClientConstructor({ Call: method }, "Bidi");
  const client = new Client(target, credentials) as unknown as grpc.Client & { Call: (md: grpc.Metadata) => grpc.ClientDuplexStream<MessageShape<I>, MessageShape<O>> };
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  const call = client.Call(md);
  call.on("status", () => client.close());
  return {
    write: (request) => void call.write(create(input, request)),
    end: () => void call.end(),
    cancel: () => call.cancel(),
    responses: call as AsyncIterable<MessageShape<O>>,
  };
}
