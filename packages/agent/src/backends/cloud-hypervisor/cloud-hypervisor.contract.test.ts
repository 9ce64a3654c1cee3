import { join } from "node:path";
import { backendContract } from "../backend.contract.js";
import { openWithStandIn, violationLog } from "../../testing/stand-in-fixture.js";
import { createCloudHypervisorBackend } from "./cloud-hypervisor-backend.js";

// The real cloud-hypervisor binary cannot be installed on these machines; the stand-in checks every
// request against the vendored spec, and each case fails if it recorded a violation.
const violations = violationLog();
const open = openWithStandIn("cloud-hypervisor", (options) => createCloudHypervisorBackend(options));
let lastStateDir = "";

backendContract(
  "cloud-hypervisor",
  async () => {
    const opened = await open();
    lastStateDir = opened.stateDir;
    return opened;
  },
  { vmDir: (vmId) => join(lastStateDir, "vms", vmId), afterEach: () => violations.assertNone() },
);
