export * from "./fuzz-run.js";
export * from "./fuzz-targets.js";
export * from "./fuzz-mutations.js";
export * from "./fuzz-wire.js";
export * from "./fuzz-send.js";
