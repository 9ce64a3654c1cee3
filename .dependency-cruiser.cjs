// The dependency rules of STYLE.md and docs/adr/0007-*.md, checked by `npm run lint:deps`
// (CI) and by packages/testing/src/dependency-rules.test.ts. Package exports
// (package.json) already stop deep imports at run time; this also catches relative paths
// into another package, imports a package has not declared, cycles, and imports that go
// against the layering.
const { readFileSync } = require("node:fs");

/** What each package's own code may import of ours (its tests: see below). */
const LAYERS = {
  api: [],
  core: ["api"],
  rpc: ["core", "api"],
  server: ["core", "api", "rpc"],
  agent: ["core", "api", "rpc"],
  testing: ["api", "core", "rpc", "server", "agent"],
  cli: ["api"],
  dashboard: ["api"],
};
const PACKAGES = Object.keys(LAYERS);
// Tests, contract suites, and a package's test support (the agent's VMM stand-ins under src/testing/).
const TESTS = "(\\.(test|contract)\\.ts$|/src/testing/)";
const any = (names) => (names.length === 0 ? "(?!)" : `(${names.join("|")})`);
const declared = (dir, fields) => {
  const manifest = JSON.parse(readFileSync(`${dir}/package.json`, "utf8"));
  return fields.flatMap((f) => Object.keys(manifest[f] ?? {})).filter((n) => n.startsWith("@quantix/")).map((n) => n.slice("@quantix/".length));
};

/**
 * Composition roots, which pick implementations and may import more than their package's
 * layer: the control plane's main.ts hands the agent's in-process simulated host to the
 * control plane for the demo nodes (the rest of the server reaches agents over vmm.v1).
 */
const ROOTS = { server: { file: "^packages/server/src/main\\.ts$", may: ["agent"] } };

/** A package's own code imports only what its layer allows. */
const layerRules = PACKAGES.flatMap((p) => [
  {
    name: `layer-${p}`,
    comment: `${p} may import ${LAYERS[p].length ? LAYERS[p].join(", ") : "nothing of ours"} (STYLE.md: dependencies point inward)`,
    severity: "error",
    from: { path: `^packages/${p}/`, pathNot: ROOTS[p] ? [TESTS, ROOTS[p].file] : TESTS },
    to: { path: "^packages/", pathNot: [`^packages/${p}/`, `^packages/${any(LAYERS[p])}/`] },
  },
  ...(ROOTS[p]
    ? [
        {
          name: `root-${p}`,
          comment: `${p}'s composition root may also import ${ROOTS[p].may.join(", ")}`,
          severity: "error",
          from: { path: ROOTS[p].file },
          to: { path: "^packages/", pathNot: [`^packages/${p}/`, `^packages/${any([...LAYERS[p], ...ROOTS[p].may])}/`] },
        },
      ]
    : []),
]);

/** A package (and the root: bench, scripts) imports only the packages of ours its package.json declares; tests may use devDependencies too. */
const declaredRules = [
  ...PACKAGES.flatMap((p) => [
    {
      name: `declared-${p}`,
      comment: `packages/${p}/package.json declares the packages of ours it imports`,
      severity: "error",
      from: { path: `^packages/${p}/`, pathNot: TESTS },
      to: { path: "^packages/", pathNot: [`^packages/${p}/`, `^packages/${any(declared(`packages/${p}`, ["dependencies"]))}/`] },
    },
    {
      name: `declared-${p}-tests`,
      comment: `packages/${p}/package.json declares (devDependencies will do) the packages of ours its tests import`,
      severity: "error",
      from: { path: `^packages/${p}/.*${TESTS}` },
      to: { path: "^packages/", pathNot: [`^packages/${p}/`, `^packages/${any(declared(`packages/${p}`, ["dependencies", "devDependencies"]))}/`] },
    },
  ]),
  {
    name: "declared-root",
    comment: "the root package.json declares the packages of ours that bench/ and scripts/ import",
    severity: "error",
    from: { path: "^(bench|scripts)/" },
    to: { path: "^packages/", pathNot: `^packages/${any(declared(".", ["dependencies", "devDependencies"]))}/` },
  },
];

module.exports = {
  forbidden: [
    ...layerRules,
    ...declaredRules,
    {
      name: "public-entries-only",
      comment:
        "another package is reached through its public entry (src/index.ts; for api its generated code): never a deep import into its src/. " +
        "Tests may import their own package's files; bench and scripts, like any other package, only public entries.",
      severity: "error",
      from: { path: "^(packages/([^/]+)/|bench/|scripts/)" },
      to: { path: "^packages/", pathNot: ["^packages/$2/", "^packages/[^/]+/src/index\\.ts$", "^packages/api/src/gen/"] },
    },
    {
      name: "by-package-name",
      comment: "another package is imported by its name (@quantix/...), which goes through its package.json exports, never by a relative path",
      severity: "error",
      from: { path: "^packages/([^/]+)/" },
      to: { path: "^packages/", pathNot: "^packages/$1/", dependencyTypes: ["local"] },
    },
    {
      name: "no-circular",
      comment: "no module reaches itself through its imports",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "not-to-unresolvable",
      comment:
        "every import resolves (a deep import that package exports hide does not). " +
        "The agent's stand-in VMMs are the exception: an executable without extension shares each .ts file's name, and dependency-cruiser's .js-to-.ts retry finds the executable (tsc and tsx find the .ts).",
      severity: "error",
      from: {},
      to: { couldNotResolve: true, pathNot: "^\\./stand-in-(cloud-hypervisor|firecracker)\\.js$" },
    },
    {
      name: "no-non-package-json",
      comment: "every npm package imported is declared in the importing package's package.json",
      severity: "error",
      from: {},
      to: { dependencyTypes: ["npm-no-pkg", "npm-unknown"] },
    },
    {
      name: "not-to-dev-dep",
      comment: "a package's own code does not import its devDependencies (tests, bench, scripts and the dashboard's build configuration may)",
      severity: "error",
      from: { path: "^packages/", pathNot: [TESTS, "^packages/dashboard/vite\\.config\\.ts$"] },
      to: { dependencyTypes: ["npm-dev"] },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    // Build output (scripts/build-packages.ts, the dashboard's vite build): the rules are about the sources.
    exclude: { path: "^packages/[^/]+/dist/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    // Each package's own package.json, not the root's, says what it may import.
    combinedDependencies: false,
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "node", "default", "types"], mainFields: ["main", "types"] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
