export { run, parseDuration } from "./cli.js";
export type { Io } from "./io.js";
export { EXIT } from "./errors.js";
export { configPath, DEFAULT_URL } from "./config.js";
