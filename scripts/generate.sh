#!/usr/bin/env bash
# Regenerates packages/api/src/gen from proto/ and third_party/proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf generate
