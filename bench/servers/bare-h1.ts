import { readFileSync } from "node:fs";
import * as http from "node:http";
import { join } from "node:path";

// The floor for an HTTP/1.1 server in Node: answers every request, once its body has been
// read, with the Connect JSON bytes the control plane produced for GetVM (argv[2]/getvm.json).

const body = readFileSync(join(process.argv[2]!, "getvm.json"));
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json", "content-length": body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});
process.on("SIGTERM", () => process.exit(0));
