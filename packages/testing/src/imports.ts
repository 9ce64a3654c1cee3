import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

/** One import of a source file: the file (relative to the directory searched) and what it imports. */
export interface SourceImport {
  readonly file: string;
  readonly from: string;
}

/**
 * The imports from packages named `prefix`... in every source file under `dir`, tests and
 * contract suites left out (dependency-rule tests: what a package's code may import).
 */
export async function importsUnder(dir: string, prefix: string): Promise<SourceImport[]> {
  const out: SourceImport[] = [];
  const walk = async (sub: string): Promise<void> => {
    for (const e of await readdir(join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(rel);
      else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") && !e.name.endsWith(".contract.ts")) {
        for (const m of (await readFile(join(dir, rel), "utf8")).matchAll(/from "([^"]+)"/g)) if (m[1]!.startsWith(prefix)) out.push({ file: rel, from: m[1]! });
      }
    }
  };
  await walk("");
  return out;
}
