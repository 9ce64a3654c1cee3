import { standInContract } from "../../testing/stand-in-fixture.js";
import { createCloudHypervisorBackend } from "./cloud-hypervisor-backend.js";

// The real cloud-hypervisor binary cannot be installed on these machines: the contract runs against the
// stand-in, which checks every request against the vendored spec (see testing/).
standInContract("cloud-hypervisor", (options) => createCloudHypervisorBackend(options));
