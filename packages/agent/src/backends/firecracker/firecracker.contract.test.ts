import { standInContract } from "../../testing/stand-in-fixture.js";
import { createFirecrackerBackend } from "./firecracker-backend.js";

// The real firecracker binary cannot be installed on these machines: the contract runs against the
// stand-in, which checks every request against the vendored spec (see testing/).
standInContract("firecracker", (options) => createFirecrackerBackend(options));
