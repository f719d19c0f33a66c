#!/usr/bin/env bash
# Start or stop the ClickHouse server the tests use (Debian clickhouse-server
# 18.16), bound to 127.0.0.1, data under target/servers/clickhouse.
#   scripts/clickhouse.sh start   # installs the Debian package if missing (root/apt),
#                                 # prints STREAMFORGE_CLICKHOUSE=http://127.0.0.1:PORT
#   scripts/clickhouse.sh stop    # keeps the data: a later start serves it again
#   scripts/clickhouse.sh reset   # stop and delete the data
# Tests read the server's HTTP address from STREAMFORGE_CLICKHOUSE.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${STREAMFORGE_STATE:-$PWD/target/servers}/clickhouse"
port="${STREAMFORGE_CLICKHOUSE_PORT:-18123}"
tcp_port="${STREAMFORGE_CLICKHOUSE_TCP_PORT:-19000}"
bin=/usr/sbin/clickhouse-server
mkdir -p "$state"

install() {
  if [ -x "$bin" ]; then return; fi
  echo "clickhouse-server not found: installing the Debian package" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root, or: apt-get install -y clickhouse-server clickhouse-client" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client >&2; }
}

stop() {
  if [ -f "$state/pid" ]; then
    pid="$(cat "$state/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/pid"
  fi
}

case "${1:-start}" in
  start)
    install
    url="http://127.0.0.1:$port"
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      echo "STREAMFORGE_CLICKHOUSE=$url"; exit 0
    fi
    mkdir -p "$state/data" "$state/tmp" "$state/user_files" "$state/format_schemas"
    nohup "$bin" --config-file=/etc/clickhouse-server/config.xml -- \
      --path="$state/data/" --tmp_path="$state/tmp/" \
      --user_files_path="$state/user_files/" --format_schema_path="$state/format_schemas/" \
      --listen_host=127.0.0.1 --http_port="$port" --tcp_port="$tcp_port" \
      --logger.log="$state/server.log" --logger.errorlog="$state/error.log" \
      --logger.console=0 > "$state/stdout.log" 2>&1 < /dev/null &
    echo $! > "$state/pid"
    for _ in $(seq 1 200); do
      if curl -sf "$url/ping" >/dev/null 2>&1; then
        echo "STREAMFORGE_CLICKHOUSE=$url"; exit 0
      fi
      sleep 0.1
    done
    echo "error: clickhouse-server did not answer on $url/ping; see $state/error.log" >&2
    exit 1
    ;;
  stop) stop ;;
  reset) stop; rm -rf "$state" ;;
  *) echo "usage: $0 start|stop|reset" >&2; exit 2 ;;
esac
