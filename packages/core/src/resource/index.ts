export * from "./kind.js";
export * from "./query.js";
export * from "./write-plan.js";
export * from "./common-rules.js";
export * from "./id-format.js";
export * from "./ids.js";
