// Adds package-lock.json entries for @bufbuild/buf's per-platform binaries that the npm
// registry reachable from our machines does not serve (it answers 404 for the darwin,
// win32 and linux-armv7 packages). Without them `npm ci` refuses the lockfile as out of
// sync; with them, npm skips the other platforms' packages by their os/cpu fields, and a
// machine on such a platform with the full registry fetches its own. Run it after any
// `npm install` that rewrites the lockfile: `node scripts/lock-platforms.mjs`.
import { readFileSync, writeFileSync } from "node:fs";

const path = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(path, "utf8"));
const parent = lock.packages["node_modules/@bufbuild/buf"];
if (!parent) throw new Error("@bufbuild/buf is not in package-lock.json");
const CPU = { arm64: "arm64", x64: "x64", armv7: "arm", aarch64: "arm64" };
let added = 0;
for (const [name, version] of Object.entries(parent.optionalDependencies ?? {})) {
  const key = `node_modules/${name}`;
  if (lock.packages[key]) continue;
  const [os, arch] = name.replace("@bufbuild/buf-", "").split("-");
  const base = name.split("/")[1];
  lock.packages[key] = {
    version,
    resolved: `https://registry.npmjs.org/${name}/-/${base}-${version}.tgz`,
    cpu: [CPU[arch] ?? arch],
    dev: true,
    license: "Apache-2.0",
    optional: true,
    os: [os],
    engines: { node: ">=12" },
  };
  added++;
}
lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1)));
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-platforms: added ${added} entries`);
