// Builds the web dashboard (packages/dashboard, `vite build` into packages/dashboard/dist,
// which the control plane serves at /) when its sources are newer than the last build, so
// `npm start` and `npm test` need no separate set-up step. `--force` builds in any case.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const pkg = join(root, "packages/dashboard");
const stamp = join(pkg, "dist/.build-stamp");

/** The newest modification time under the given files and directories (0 when none exist). */
function newest(paths: readonly string[]): number {
  let max = 0;
  for (const p of paths) {
    let s;
    try {
      s = statSync(p);
    } catch {
      continue;
    }
    if (s.isDirectory()) max = Math.max(max, newest(readdirSync(p).map((n) => join(p, n))));
    else max = Math.max(max, s.mtimeMs);
  }
  return max;
}

const sources = newest([join(pkg, "src/app"), join(pkg, "index.html"), join(pkg, "vite.config.ts"), join(pkg, "package.json"), join(root, "packages/api/src/gen")]);
const built = newest([stamp]);
if (process.argv.includes("--force") || built === 0 || sources > built) {
  process.stderr.write("building the web dashboard (packages/dashboard → dist)…\n");
  const r = spawnSync(process.execPath, [join(root, "node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn"], { cwd: pkg, stdio: "inherit" });
  if (r.status !== 0) {
    process.stderr.write("the dashboard build failed (see above); the control plane will say so at /\n");
    process.exit(r.status ?? 1);
  }
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
}
