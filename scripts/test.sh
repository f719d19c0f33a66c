#!/usr/bin/env bash
# The whole test suite: builds, then runs every unit, doc, property and
# end-to-end test. Needs ../shared/data (the real data sets) next to the repo.
# Servers for later connectors are installed and started from here.
set -euo pipefail
cd "$(dirname "$0")/.."

data="${STREAMFORGE_SHARED_DATA:-../shared/data}"
if [ ! -f "$data/SOURCES.md" ]; then
  echo "error: real test data not found at $data" >&2
  echo "       clone this repository next to shared/ (so ../shared/data exists)" >&2
  echo "       or set STREAMFORGE_SHARED_DATA=/path/to/shared/data" >&2
  exit 2
fi

cargo build --release --workspace --all-targets
cargo test --release --workspace --all-targets
cargo test --release --workspace --doc
