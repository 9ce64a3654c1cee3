import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { QuantixError } from "@quantix/core";
import { httpGet, type GetOptions, type SaveOptions } from "./http-download.js";

// ImportVolume's HTTP/1.1 client against real servers on loopback: node:http (Content-Length
// and chunked bodies, redirects), a raw TCP server (bodies ended by closing, 1xx heads, stalls,
// truncation) and node:https with a certificate made here.

const MIB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "quantix-http-download-"));
const body = randomBytes(9 * MIB + 12345);
const sha = createHash("sha256").update(body).digest("hex");
let base = "";
let rawBase = "";
let httpsBase = "";
let ca = "";
const closers: (() => void)[] = [];

/** Writes `data` in pieces of varied size, as a server streaming from disk would. */
function writeInPieces(res: ServerResponse, data: Buffer): void {
  let i = 0;
  let n = 1;
  const next = (): void => {
    while (i < data.length) {
      const piece = data.subarray(i, i + (n = (n * 7919) % 300_000) + 1);
      i += piece.length;
      if (!res.write(piece)) return void res.once("drain", next);
    }
    res.end();
  };
  next();
}

function handler(req: IncomingMessage, res: ServerResponse): void {
  const [path, query] = (req.url ?? "").split("?");
  if (path === "/length") {
    res.writeHead(200, { "content-length": String(body.length) });
    return writeInPieces(res, body);
  }
  if (path === "/chunked") {
    res.writeHead(200);
    return writeInPieces(res, body);
  }
  if (path === "/hop") {
    const left = Number(query ?? 0);
    res.writeHead(left % 2 ? 301 : 307, { location: left > 0 ? `/hop?${left - 1}` : "/length" });
    return void res.end();
  }
  if (path === "/ftp") {
    res.writeHead(302, { location: "ftp://example.org/x" });
    return void res.end();
  }
  if (path === "/truncated") {
    res.writeHead(200, { "content-length": String(2 * MIB) });
    res.write(body.subarray(0, MIB));
    return void setImmediate(() => res.socket?.destroy());
  }
  res.writeHead(404);
  res.end();
}

before(async () => {
  const web = createServer(handler);
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
  closers.push(() => web.close());

  // Raw responses: the request's path picks what is sent.
  const raw = net.createServer((sock) => {
    sock.on("error", () => undefined);
    sock.once("data", (req) => {
      const path = /^GET (\S+)/.exec(req.toString("latin1"))?.[1];
      if (path === "/close") return void sock.end(Buffer.concat([Buffer.from("HTTP/1.0 200 OK\r\nServer: raw\r\n\r\n"), body]));
      if (path === "/early-hints") return void sock.end(Buffer.concat([Buffer.from("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")]));
      if (path === "/chunked-cut") return void sock.end("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789");
      if (path === "/stall-body") return void sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body.subarray(0, MIB)]));
      if (path === "/stall-head") return;
      if (path === "/garbage") return void sock.end("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    });
  });
  await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
  rawBase = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
  const sockets = new Set<net.Socket>();
  raw.on("connection", (s) => (sockets.add(s), s.on("close", () => sockets.delete(s))));
  closers.push(() => (sockets.forEach((s) => s.destroy()), raw.close()));

  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
  ca = readFileSync(join(dir, "cert.pem"), "utf8");
  const secure = createHttpsServer({ key: readFileSync(join(dir, "key.pem")), cert: ca }, handler);
  await new Promise<void>((resolve) => secure.listen(0, "127.0.0.1", resolve));
  httpsBase = `https://127.0.0.1:${(secure.address() as AddressInfo).port}`;
  closers.push(() => secure.close());
});
after(() => {
  closers.forEach((close) => close());
  rmSync(dir, { recursive: true, force: true });
});

const get = (url: string, options: Partial<GetOptions> = {}) => httpGet(new URL(url), { signal: new AbortController().signal, maxRedirects: 5, idleTimeoutMs: 30_000, ...options });
let files = 0;
/** GETs `url` and saves its body; returns what was saved, the file's bytes, and the progress seen. */
async function save(url: string, get_: Partial<GetOptions> = {}, save_: Partial<SaveOptions> = {}) {
  const res = await get(url, get_);
  const path = join(dir, `out-${++files}`);
  const progress: bigint[] = [];
  try {
    const saved = await res.saveTo(path, { limit: 1n << 40n, progressEvery: 1n << 20n, stop: new AbortController().signal, onProgress: (n) => progress.push(n), ...save_ });
    return { res, saved, data: readFileSync(path), progress };
  } finally {
    res.close();
  }
}
const unavailable = (pattern: RegExp) => (e: unknown) => e instanceof QuantixError && e.code === "unavailable" && pattern.test(e.message);

test("a Content-Length body arrives whole with its sha256; progress as it comes", async () => {
  const { res, saved, data, progress } = await save(`${base}/length`);
  assert.equal(res.length, BigInt(body.length));
  assert.equal(saved.bytes, BigInt(body.length));
  assert.equal(saved.sha256, sha);
  assert.ok(data.equals(body), "the file holds the body");
  assert.ok(progress.length >= 4, `progress reported (${progress.length} times)`);
  assert.deepEqual([...progress].sort((a, b) => (a < b ? -1 : 1)), progress, "progress only grows");
});

test("a chunked body and one ended by the server closing arrive whole; a 1xx head is skipped", async () => {
  for (const url of [`${base}/chunked`, `${rawBase}/close`]) {
    const { res, saved, data } = await save(url);
    assert.equal(res.length, undefined, url);
    assert.equal(saved.sha256, sha, url);
    assert.ok(data.equals(body), url);
  }
  const hints = await save(`${rawBase}/early-hints`);
  assert.equal(hints.data.toString(), "hello");
});

test("with 4 KiB blocks (a body's start filling the first block before saveTo, reading paused on writes in flight) every kind of body arrives whole", async () => {
  for (const url of [`${base}/length`, `${base}/chunked`, `${rawBase}/close`, `${httpsBase}/chunked`]) {
    const { saved, data } = await save(url, { blockBytes: 4096, ca });
    assert.equal(saved.sha256, sha, url);
    assert.ok(data.equals(body), url);
  }
});

test("https: the body arrives whole from a server the CA vouches for; an unknown certificate is refused", async () => {
  const { saved, data } = await save(`${httpsBase}/chunked`, { ca });
  assert.equal(saved.sha256, sha);
  assert.ok(data.equals(body));
  await assert.rejects(get(`${httpsBase}/length`), unavailable(/cannot download the image: .*(SELF_SIGNED|UNABLE|CERT)/));
});

test("redirects are followed up to the limit, to http(s) only", async () => {
  const { saved } = await save(`${base}/hop?3`, { maxRedirects: 4 });
  assert.equal(saved.sha256, sha);
  await assert.rejects(get(`${base}/hop?3`, { maxRedirects: 3 }), unavailable(/redirects more than 3 times/));
  await assert.rejects(get(`${base}/ftp`), unavailable(/redirects to a ftp: URL/));
});

test("what cannot be fetched is UNAVAILABLE, naming why", async () => {
  await assert.rejects(get(`${base}/missing`), unavailable(/HTTP 404/));
  await assert.rejects(get("http://127.0.0.1:1/x"), unavailable(/ECONNREFUSED/));
  await assert.rejects(get(`${rawBase}/garbage`), unavailable(/not valid HTTP/));
  await assert.rejects(get(`${rawBase}/stall-head`, { idleTimeoutMs: 300 }), unavailable(/cannot download the image: no data for 0.3 s/));
});

test("a body cut short, stalled or past the limit fails, saying how far it came", async () => {
  await assert.rejects(save(`${base}/truncated`), unavailable(/ended early after 1048576 of 2097152 bytes/));
  await assert.rejects(save(`${rawBase}/chunked-cut`), unavailable(/ended early after 10 bytes/));
  await assert.rejects(save(`${rawBase}/stall-body`, { idleTimeoutMs: 300 }), unavailable(/ended early after 1048576 of \d+ bytes: no data for 0.3 s/));
  await assert.rejects(save(`${base}/chunked`, {}, { limit: 3n * BigInt(MIB) }), (e: unknown) => e instanceof QuantixError && e.code === "resource_exhausted" && /passed the pool's 3145728 available bytes/.test(e.message));
});

test("stopping a download mid-body settles it: saveTo rejects, the connection is closed", async () => {
  const res = await get(`${rawBase}/stall-body`);
  const stop = new AbortController();
  const path = join(dir, "stopped");
  const saving = res.saveTo(path, { limit: 1n << 40n, progressEvery: 1n << 20n, stop: stop.signal, onProgress: () => stop.abort() });
  await assert.rejects(saving, unavailable(/stopped/));
  assert.ok(readFileSync(path).length <= MIB, "no more than was received was written");
  await assert.rejects(res.saveTo(path, { limit: 1n, progressEvery: 1n, stop: stop.signal, onProgress: () => undefined }), /no response to save/);
});

test("the caller's signal ends a download at any point", async () => {
  const ac = new AbortController();
  const res = await get(`${rawBase}/stall-body`, { signal: ac.signal });
  const saving = res.saveTo(join(dir, "aborted"), { limit: 1n << 40n, progressEvery: 1n << 20n, stop: new AbortController().signal, onProgress: () => ac.abort() });
  await assert.rejects(saving, unavailable(/ended early after 1048576 of/));
  const early = new AbortController();
  early.abort();
  await assert.rejects(get(`${base}/length`, { signal: early.signal }), unavailable(/cannot download the image/));
});
