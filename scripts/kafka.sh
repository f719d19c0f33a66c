#!/usr/bin/env bash
# Start or stop the Kafka-protocol broker the tests use: Tansu, bound to 127.0.0.1.
#   scripts/kafka.sh start   # installs tansu with cargo if missing (15–30 min once),
#                            # starts it, prints STREAMFORGE_KAFKA=127.0.0.1:PORT
#   scripts/kafka.sh stop
# Tests read the broker address from STREAMFORGE_KAFKA.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${STREAMFORGE_STATE:-$PWD/target/servers}"
port="${STREAMFORGE_KAFKA_PORT:-19092}"
mkdir -p "$state"

tansu_bin() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  if [ -x "$HOME/.cargo/bin/tansu" ]; then echo "$HOME/.cargo/bin/tansu"; return; fi
  echo "tansu not found: installing it with cargo (once; 15-30 min on 2 cores)" >&2
  cargo install tansu --locked --features dynostore,libsql >&2
  echo "$HOME/.cargo/bin/tansu"
}

case "${1:-start}" in
  start)
    bin="$(tansu_bin)"
    if [ -f "$state/tansu.pid" ] && kill -0 "$(cat "$state/tansu.pid")" 2>/dev/null; then
      echo "STREAMFORGE_KAFKA=127.0.0.1:$port"; exit 0
    fi
    nohup "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ --silent > "$state/tansu.log" 2>&1 < /dev/null &
    echo $! > "$state/tansu.pid"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "STREAMFORGE_KAFKA=127.0.0.1:$port"; exit 0
      fi
      sleep 0.1
    done
    echo "error: tansu did not listen on 127.0.0.1:$port; see $state/tansu.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$state/tansu.pid" ]; then kill "$(cat "$state/tansu.pid")" 2>/dev/null || true; rm -f "$state/tansu.pid"; fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
