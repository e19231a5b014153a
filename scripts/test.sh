#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the controller's and the
# plugin's tests against real API servers (mc-testenv), and the end-to-end
# tests in the lab (network namespaces: needs root). scripts/deps.sh installs
# the packages and builds the Kubernetes components once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the lab tests create network namespaces: run as root (sudo $0)" >&2
  exit 1
fi
scripts/deps.sh
# The end-to-end tests drive the real binaries: build them first, together
# with the tests so that both share one feature resolution (one build of the
# dependencies, not two).
cargo build --locked --workspace --bins --tests
cargo test --locked --workspace -- --test-threads=2
