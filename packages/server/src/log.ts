// The logger lives in @quantix/rpc; this re-export keeps the control plane's modules that
// import "../log.js" unchanged while the store, services and controllers are rewritten.
export { createJsonLogger, silentLogger, type Logger, type LogLevel } from "@quantix/rpc";
