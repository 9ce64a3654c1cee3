import { join } from "node:path";
import { backendContract } from "../backend.contract.js";
import { openWithStandIn, violationLog } from "../../testing/stand-in-fixture.js";
import { createFirecrackerBackend } from "./firecracker-backend.js";

// The real firecracker binary cannot be installed on these machines; the stand-in checks every
// request against the vendored spec, and each case fails if it recorded a violation.
const violations = violationLog();
const open = openWithStandIn("firecracker", (options) => createFirecrackerBackend(options));
let lastStateDir = "";

backendContract(
  "firecracker",
  async () => {
    const opened = await open();
    lastStateDir = opened.stateDir;
    return opened;
  },
  { vmDir: (vmId) => join(lastStateDir, "vms", vmId), afterEach: () => violations.assertNone() },
);
