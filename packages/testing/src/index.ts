export * from "./test-server.js";
export * from "./until.js";
export * from "./rpc.js";
export * from "./postgres.js";
export * from "./process.js";
export * from "./alive.js";
export * from "./prometheus-parse.js";
