import { readFile, stat } from "node:fs/promises";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { AnyRequest } from "../console/console-http.js";

/** The dashboard's build output in this checkout (`vite build` in packages/dashboard). */
export const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL("../../../dashboard/dist", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

interface Res {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(body?: string | Buffer): void;
}

/**
 * Serves the built web dashboard: its files (hashed `/assets/*` cached for a year, the rest
 * revalidated), and `index.html` for every other GET path without a file extension (the
 * client-side routes). Never answers the API's paths: RPCs (`/pkg.Service/Method`),
 * `/_/…`, `/metrics`, `/v1/…` are left to the next handler. Without a build, `/` and the
 * client routes answer a page saying how to build it. Returns whether it answered.
 */
export function dashboardFiles(dir: string = DEFAULT_DASHBOARD_DIR) {
  const root = resolve(dir);
  return (req: AnyRequest, res: unknown): boolean => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const pathname = (req.url ?? "/").split("?")[0] ?? "/";
    if (!servable(pathname)) return false;
    let decoded: string;
    try {
      decoded = decodeURIComponent(pathname);
    } catch {
      return false;
    }
    if (decoded.includes("\0") || decoded.split("/").some((s) => s === "..")) return false;
    const ext = extname(decoded);
    const file = resolve(join(root, decoded === "/" ? "index.html" : decoded));
    if (file !== root && !file.startsWith(root + sep)) return false;
    void answer(req, res as Res, root, file, ext).catch(() => undefined);
    return true;
  };
}

/** Whether a path may be the dashboard's: not an RPC, health, metrics or `/v1/` path. */
function servable(pathname: string): boolean {
  if (pathname.startsWith("/_/") || pathname === "/metrics" || pathname.startsWith("/v1/") || pathname === "/v1") return false;
  const segments = pathname.split("/").filter((s) => s !== "");
  // gRPC, gRPC-Web and Connect paths: /<package>.<Service>/<Method>.
  if (segments.length >= 2 && segments[0]!.includes(".")) return false;
  return true;
}

async function answer(req: AnyRequest, res: Res, root: string, file: string, ext: string): Promise<void> {
  const head = req.method === "HEAD";
  const found = await stat(file).then((s) => s.isFile(), () => false);
  if (found) {
    const body = await readFile(file);
    const immutable = file.startsWith(join(root, "assets") + sep);
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "content-length": body.length,
      "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
      "x-content-type-options": "nosniff",
    });
    res.end(head ? undefined : body);
    return;
  }
  if (ext !== "") {
    const text = JSON.stringify({ error: "not_found", message: `no dashboard file ${file.slice(root.length)}` });
    res.writeHead(404, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(head ? undefined : text);
    return;
  }
  // A client-side route: the app's index.html, or how to build it.
  const index = await readFile(join(root, "index.html")).catch(() => undefined);
  if (index) {
    res.writeHead(200, { "content-type": TYPES[".html"]!, "content-length": index.length, "cache-control": "no-cache", "x-content-type-options": "nosniff" });
    res.end(head ? undefined : index);
    return;
  }
  const page = notBuiltPage(root);
  res.writeHead(503, { "content-type": TYPES[".html"]!, "content-length": Buffer.byteLength(page), "cache-control": "no-cache" });
  res.end(head ? undefined : page);
}

function notBuiltPage(root: string): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quantix: dashboard not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>The dashboard is not built</h1>
<p>The control plane is running and its API answers on this port, but there is no dashboard build in
<code>${esc(root)}</code>.</p>
<p>Build it from the repository root, then reload this page:</p>
<pre>npm run build:dashboard</pre>
<p>(<code>npm start</code> builds it by itself when its sources changed; set <code>QUANTIX_DASHBOARD_DIR</code> to serve a build from elsewhere.)</p>
</body></html>
`;
}
