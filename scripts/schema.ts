// Prints the CREATE TABLE and CREATE INDEX statements a kind's declaration implies, for
// its migration: `npm run schema -- quantix_events`. Paste them into migrations.ts as a
// new migration; a shipped migration never changes.
import { ALL_KINDS } from "@quantix/core";
import { kindTableDdl } from "@quantix/server";

const table = process.argv[2];
const kind = ALL_KINDS.find((k) => k.table === table);
if (!kind) {
  process.stderr.write(`usage: npm run schema -- <table>\nknown tables: ${ALL_KINDS.map((k) => k.table).join(", ")}\n`);
  process.exit(2);
}
process.stdout.write(`${kindTableDdl(kind)}\n`);
