export * from "./cluster.js";
export * from "./explain.js";
export * from "./filters.js";
export * from "./label-selector.js";
export * from "./schedule.js";
export * from "./scores.js";
export * from "./taints.js";
