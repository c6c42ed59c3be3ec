#!/usr/bin/env bash
# Runs the whole test suite: unit tests, property tests, golden vectors, loopback transfers,
# network-namespace (mDNS) tests and real FUSE mounts. Needs root, iproute2 and fuse3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the namespace and mount tests need root (run with sudo)" >&2
  exit 1
fi
cargo test --all-targets "$@"
