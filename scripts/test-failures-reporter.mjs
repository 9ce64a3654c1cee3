// A node:test reporter that prints nothing until the run ends, then one block naming every
// failed test (file, the suite path, the error's first lines). CI keeps only the tail of a
// run's output; with this, the tail says which test failed and why, not only "# fail 1".
export default async function* failures(source) {
  const failed = [];
  const stacks = new Map(); // per file: files run in parallel and their events interleave
  for await (const event of source) {
    if (event.type === "test:start") {
      const stack = stacks.get(event.data.file) ?? [];
      stack[event.data.nesting] = event.data.name;
      stacks.set(event.data.file, stack);
    } else if (event.type === "test:fail") {
      const { name, nesting, details, file } = event.data;
      const error = details?.error;
      // A suite fails when a test inside it failed; the test itself is already listed.
      if (error?.failureType === "subtestsFailed") continue;
      const stack = stacks.get(file) ?? [];
      const path = [...stack.slice(0, nesting), name].join(" > ");
      const cause = error?.cause ?? error;
      const message = String(cause?.stack ?? cause?.message ?? cause ?? "")
        .split("\n")
        .slice(0, 8)
        .map((line) => `#     ${line}`)
        .join("\n");
      failed.push(`# ✖ ${file ?? "?"}\n#   ${path}\n${message}`);
    }
  }
  if (failed.length === 0) return;
  yield `\n# failed tests (${failed.length})\n${failed.join("\n")}\n`;
}
