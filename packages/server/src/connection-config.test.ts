import assert from "node:assert/strict";
import * as net from "node:net";
import { after, before, describe, test } from "node:test";
import { until } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "./app.js";
import { loadConfig } from "./config.js";

// The connection limits of the README's configuration table reach the listener.

describe("QUANTIX_MAX_CONNECTIONS_PER_SOURCE and QUANTIX_HEADERS_TIMEOUT_MS", () => {
  const env = { QUANTIX_MAX_CONNECTIONS_PER_SOURCE: "3", QUANTIX_HEADERS_TIMEOUT_MS: "1500", QUANTIX_IDLE_TIMEOUT_MS: "60000" };
  let cp: ControlPlane;
  before(async () => {
    cp = await startControlPlane(loadConfig(env, { port: 0, store: { kind: "memory" }, logLevel: "silent", demo: false }));
  });
  after(() => cp.close());

  test("are read, with their defaults, and out-of-range values are refused", () => {
    const c = loadConfig(env);
    assert.deepEqual([c.maxConnectionsPerSource, c.headersTimeoutMs, c.idleTimeoutMs], [3, 1500, 60_000]);
    const d = loadConfig({});
    assert.deepEqual([d.maxConnectionsPerSource, d.headersTimeoutMs, d.idleTimeoutMs], [1024, 20_000, 300_000]);
    assert.throws(() => loadConfig({ QUANTIX_MAX_CONNECTIONS_PER_SOURCE: "0" }), /QUANTIX_MAX_CONNECTIONS_PER_SOURCE/);
  });

  test("a fourth connection from one address is closed at once; idle h2c connections are closed after the headers timeout", async () => {
    const sockets = await Promise.all(
      Array.from({ length: 5 }, () => {
        const s = net.connect(cp.port, "127.0.0.1");
        const state = { closed: false, s };
        s.on("close", () => (state.closed = true));
        s.on("error", () => undefined);
        s.resume();
        return new Promise<typeof state>((resolve) => s.once("connect", () => (s.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"), resolve(state))));
      }),
    );
    try {
      await until(() => (sockets.filter((x) => x.closed).length >= 2 ? true : undefined), "two connections refused before any headers timeout", 1000);
      assert.equal(sockets.filter((x) => x.closed).length, 2);
      await until(() => (sockets.every((x) => x.closed) ? true : undefined), "the idle ones closed", 5000);
    } finally {
      for (const x of sockets) x.s.destroy();
    }
  });
});
