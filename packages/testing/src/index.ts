export * from "./test-server.js";
export * from "./until.js";
