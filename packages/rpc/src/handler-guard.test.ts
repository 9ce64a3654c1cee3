import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { route, startRpcServer, type Logger, type RpcServer } from "./index.js";

// A fallback or upgrade handler that throws (a door with a bug) answers 500 and is
// logged; the process, and every other call on it, goes on.

const logged: { msg: string; fields: Record<string, unknown> | undefined }[] = [];
const log: Logger = { log: (_level, msg, fields) => void logged.push({ msg, fields }) };

let server: RpcServer;
before(async () => {
  const nodes = route(NodeService, { getNode: (req) => create(NodeSchema, { id: req.id }) });
  server = await startRpcServer({
    host: "127.0.0.1",
    port: 0,
    routes: [nodes],
    log,
    fallback: (req, res) => {
      if (req.url === "/boom") throw new Error("door bug");
      res.writeHead(404);
      res.end();
    },
    upgrade: () => {
      throw new Error("upgrade bug");
    },
  });
});
after(() => server.close(1000));

function raw(request: string): Promise<string> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), "127.0.0.1", () => socket.write(request));
    let out = "";
    socket.setTimeout(5000, () => socket.destroy());
    socket.on("data", (d) => (out += d.toString("latin1")));
    socket.on("close", () => resolve(out));
    socket.on("error", reject);
  });
}

test("a fallback that throws answers 500 over HTTP/1.1 and h2, is logged, and the server keeps serving", async () => {
  const h1 = await fetch(`${server.url}/boom`);
  assert.equal(h1.status, 500);
  assert.match(await h1.text(), /could not be handled/);
  const session = http2.connect(server.url);
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const req = session.request({ ":path": "/boom" });
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
      req.resume();
      req.end();
    });
    assert.equal(status, 500);
  } finally {
    session.close();
  }
  assert.ok(logged.some((l) => l.msg === "request handler failed" && String(l.fields?.["error"]).includes("door bug")));
  assert.equal((await fetch(`${server.url}/other`)).status, 404);
});

test("an upgrade handler that throws closes that socket with a 500 and the server keeps serving", async () => {
  const reply = await raw("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  assert.match(reply, /^HTTP\/1\.1 500 /);
  assert.ok(logged.some((l) => l.msg === "upgrade handler failed" && String(l.fields?.["error"]).includes("upgrade bug")));
  assert.equal((await fetch(`${server.url}/other`)).status, 404);
});
