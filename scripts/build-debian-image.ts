// Builds the journey's Debian cloud image into this machine's image cache (or finds it
// there) and prints where it is: CI runs it before the tests, so that no test pays for
// the build. `QUANTIX_IMAGE_CACHE` moves the cache (default ~/.cache/quantix/images).
import { debianCloudImage } from "@quantix/testing";

const image = await debianCloudImage();
process.stdout.write(`${JSON.stringify({ ...image, buildSeconds: Math.round(image.buildMs / 1000) }, null, 2)}\n`);
