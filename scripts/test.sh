#!/usr/bin/env bash
# The whole test suite: builds, then runs every unit, doc, property and
# end-to-end test. Needs ../shared/data (the real data sets) next to the repo.
# It installs (once) and starts the servers the tests need, on 127.0.0.1:
# Tansu (Kafka), ClickHouse 18.16 and PostgreSQL 15 (Debian packages); and
# Chromium (Debian package) for the status-page screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."

data="${STREAMFORGE_SHARED_DATA:-../shared/data}"
if [ ! -f "$data/SOURCES.md" ]; then
  echo "error: real test data not found at $data" >&2
  echo "       clone this repository next to shared/ (so ../shared/data exists)" >&2
  echo "       or set STREAMFORGE_SHARED_DATA=/path/to/shared/data" >&2
  exit 2
fi

# A real Kafka-protocol broker (Tansu) on 127.0.0.1 for the Kafka end-to-end tests.
eval "$(scripts/kafka.sh start)"
export STREAMFORGE_KAFKA
trap 'scripts/kafka.sh stop; scripts/clickhouse.sh stop; scripts/postgres.sh stop' EXIT
# ClickHouse and PostgreSQL for the database sink tests (tests/databases.rs).
eval "$(scripts/clickhouse.sh start)"
eval "$(scripts/postgres.sh start)"
export STREAMFORGE_CLICKHOUSE STREAMFORGE_POSTGRES
# Headless Chromium for the status-page screenshot test (tests/status_page.rs).
if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package) for the status-page test" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null ||
    { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi

cargo build --release --workspace --all-targets
cargo test --release --workspace --all-targets
cargo test --release --workspace --doc
