// Compiles the workspace packages that `npm start` and `npm run agent` run to JavaScript,
// each file on its own (esbuild, no bundling): packages/<pkg>/src/**/*.ts (tests and test support aside) to
// packages/<pkg>/dist/ at the same depth, with a source map beside each file, so the code's
// `new URL("../…", import.meta.url)` lookups find the same files from dist/ as from src/.
// A package takes part when its package.json exports name the "quantix-compiled" condition
// (node --conditions=quantix-compiled then resolves @quantix/* to dist/; tsx, tsc, the tests
// and dependency-cruiser know no such condition and keep resolving src/). Running compiled
// code spares the control plane tsx's loader thread and its heap (bench/README.md, footprint).
// Only files whose output changed are written, and files whose source is gone are removed.
import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

/** The export condition that selects a package's compiled files. */
const COMPILED_CONDITION = "quantix-compiled";

const root = fileURLToPath(new URL("..", import.meta.url));
/** Tests, contract suites and test support (src/testing/), as .dependency-cruiser.cjs names them: the binaries never load them. */
const TEST_CODE = /(\.(test|contract)\.ts$|\/src\/testing\/)/;

/** Every file under a directory (none when it does not exist). */
function files(dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}

/** Removes the empty directories under `dir` (what removed files left); true when `dir` itself is now empty. */
function prune(dir: string): boolean {
  let empty = true;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory() && prune(join(dir, e.name))) rmdirSync(join(dir, e.name));
    else empty = false;
  }
  return empty;
}

/** The packages whose exports name the compiled condition. */
function compiledPackages(): string[] {
  const dir = join(root, "packages");
  return readdirSync(dir)
    .map((name) => join(dir, name))
    .filter((p) => {
      try {
        return JSON.stringify(JSON.parse(readFileSync(join(p, "package.json"), "utf8")).exports ?? {}).includes(`"${COMPILED_CONDITION}"`);
      } catch {
        return false;
      }
    });
}

const started = performance.now();
const packages = compiledPackages();
const entryPoints = packages.flatMap((p) =>
  files(join(p, "src"))
    .filter((f) => f.endsWith(".ts") && !TEST_CODE.test(f))
    .map((f) => ({ in: f, out: join(p, "dist", relative(join(p, "src"), f)).slice(0, -".ts".length) })),
);
const result = await build({
  absWorkingDir: root,
  entryPoints,
  outdir: root,
  bundle: false,
  format: "esm",
  platform: "node",
  target: `node${process.versions.node.split(".")[0]}`,
  sourcemap: "linked",
  // The maps point at the .ts files beside dist/; no need to copy them in.
  sourcesContent: false,
  tsconfig: join(root, "tsconfig.json"),
  write: false,
  logLevel: "warning",
});

const wanted = new Set<string>();
let written = 0;
for (const out of result.outputFiles) {
  wanted.add(out.path);
  let old: Uint8Array | undefined;
  try {
    old = readFileSync(out.path);
  } catch {
    old = undefined;
  }
  if (old && Buffer.compare(old, out.contents) === 0) continue;
  mkdirSync(dirname(out.path), { recursive: true });
  writeFileSync(out.path, out.contents);
  written++;
}
let removed = 0;
for (const p of packages) {
  for (const f of files(join(p, "dist"))) {
    if (!wanted.has(f)) {
      rmSync(f);
      removed++;
    }
  }
  if (removed > 0) prune(join(p, "dist"));
}
if (written > 0 || removed > 0) {
  const ms = Math.round(performance.now() - started);
  process.stderr.write(`compiled ${packages.map((p) => relative(root, p)).join(", ")} → dist/ (${entryPoints.length} files, ${written} written, ${removed} removed) in ${ms} ms\n`);
}
