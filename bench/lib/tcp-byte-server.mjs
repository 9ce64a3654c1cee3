// A member of the load balancer bench (net-lb-rate.ts): accepts TCP on the port given,
// writes one byte and closes. Prints "ready" once listening; on SIGTERM (or stdin's end)
// prints the number of connections it served and exits.
import { createServer } from "node:net";

const port = Number(process.argv[2]);
let served = 0;
const server = createServer((sock) => {
  served++;
  sock.on("error", () => undefined);
  sock.end("x");
});
server.listen({ port, host: "0.0.0.0", backlog: 1024 }, () => process.stdout.write("ready\n"));
const done = () => {
  process.stdout.write(`served ${served}\n`, () => process.exit(0));
};
process.on("SIGTERM", done);
process.stdin.on("end", done);
process.stdin.resume();
