// The client of the load balancer bench (net-lb-rate.ts): `loops` concurrent loops, each
// connect → read one byte → close, to host:port, for `seconds`. Prints one JSON line:
// completed connections, failures (refused, reset, timed out, no byte), the time taken.
import { connect } from "node:net";

const [host, portText, loopsText, secondsText] = process.argv.slice(2);
const port = Number(portText);
const loops = Number(loopsText);
const until = performance.now() + Number(secondsText) * 1000;
let ok = 0;
let failed = 0;
const errors = {};

const once = () =>
  new Promise((resolve) => {
    let got = false;
    const s = connect({ host, port });
    s.setTimeout(2000, () => s.destroy(new Error("timeout")));
    s.once("data", () => {
      got = true;
      s.destroy();
    });
    s.once("error", (e) => {
      errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
    });
    s.once("close", () => {
      if (got) ok++;
      else failed++;
      resolve();
    });
  });

const t0 = performance.now();
await Promise.all(
  Array.from({ length: loops }, async () => {
    while (performance.now() < until) await once();
  }),
);
const ms = performance.now() - t0;
process.stdout.write(`${JSON.stringify({ ok, failed, ms, perSec: (ok * 1000) / ms, errors })}\n`);
