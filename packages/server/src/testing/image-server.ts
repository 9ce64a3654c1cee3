import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const MIB = 1024 * 1024;

/** An HTTP server on loopback serving images made by the real qemu-img, and bad downloads. */
export interface ImageServer {
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  /** The paths requested so far, in order. */
  readonly requests: readonly string[];
  /** The bytes served at a path. */
  readonly files: ReadonlyMap<string, Buffer>;
  sha256(path: string): string;
  close(): Promise<void>;
}

/**
 * Serves, from images made under `dir` (qemu-utils and xz-utils installed):
 * - `/a.qcow2` a 16 MiB qcow2 with a 0xab pattern in its first MiB; `/a.qcow2.gz` and
 *   `/a.qcow2.xz` the same compressed;
 * - `/big.raw` 12 MiB of incompressible raw data (several progress steps);
 * - `/evil.qcow2` a qcow2 whose backing file is the host's /etc/hostname;
 * - `/truncated` a Content-Length of 1 MiB and 100 KiB before the connection drops;
 * - `/stall-once.qcow2` the first time 64 KiB of `/a.qcow2` and then a byte a second (a
 *   download in progress for as long as the client stays), afterwards `/a.qcow2`;
 * anything else answers 404.
 */
export async function startImageServer(dir: string): Promise<ImageServer> {
  mkdirSync(dir, { recursive: true });
  const files = new Map<string, Buffer>();
  const a = join(dir, "a.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", a, "16M"]);
  execFileSync("qemu-io", ["-f", "qcow2", a, "-c", "write -P 0xab 0 1M"], { stdio: "ignore" });
  files.set("/a.qcow2", readFileSync(a));
  files.set("/a.qcow2.gz", gzipSync(readFileSync(a)));
  execFileSync("xz", ["-k", "-0", a]);
  files.set("/a.qcow2.xz", readFileSync(`${a}.xz`));
  const raw = Buffer.alloc(12 * MIB);
  for (let i = 0; i < raw.length; i += 32) createHash("sha256").update(String(i)).digest().copy(raw, i);
  files.set("/big.raw", raw);
  const evil = join(dir, "evil.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", evil, "1M"]);
  files.set("/evil.qcow2", readFileSync(evil));

  const requests: string[] = [];
  const web: Server = createServer((req, res) => {
    requests.push(req.url ?? "");
    if (req.url === "/stall-once.qcow2") {
      const body = files.get("/a.qcow2")!;
      res.writeHead(200, { "content-length": String(body.length) });
      if (requests.filter((r) => r === req.url).length > 1) return void res.end(body);
      // The first time: 64 KiB, then a byte a second, so that the download stays under way
      // (never idle long enough for the client's 30 s timeout) until the client goes away.
      let sent = 64 * 1024;
      res.write(body.subarray(0, sent));
      const trickle = setInterval(() => {
        if (sent < body.length) res.write(body.subarray(sent, ++sent));
      }, 1000);
      res.on("close", () => clearInterval(trickle));
      return;
    }
    if (req.url === "/truncated") {
      res.writeHead(200, { "content-length": String(MIB) });
      res.write(Buffer.alloc(100 * 1024));
      setTimeout(() => res.socket?.destroy(), 20);
      return;
    }
    const body = files.get(req.url ?? "");
    if (!body) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { "content-length": String(body.length) });
    res.end(body);
  });
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${(web.address() as AddressInfo).port}`,
    requests,
    files,
    sha256: (path) => createHash("sha256").update(files.get(path)!).digest("hex"),
    close: () =>
      new Promise((resolve) => {
        web.closeAllConnections();
        web.close(() => resolve());
      }),
  };
}
