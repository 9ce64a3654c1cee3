export * from "./request-filter.js";
export * from "./resource-service.js";
export * from "./resource-routes.js";
export * from "./resource-writer.js";
export * from "./request-ids.js";
