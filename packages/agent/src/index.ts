// The agent package's public entry: the backend port, and the simulated host a control
// plane runs in its own process for its demo nodes (its composition root passes it in).
export * from "./backend.js";
export * from "./simulated-host.js";
