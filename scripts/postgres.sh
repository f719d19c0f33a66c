#!/usr/bin/env bash
# Start or stop the PostgreSQL 15 server the tests use, bound to 127.0.0.1,
# with wal_level=logical (CDC) and prepared transactions enabled; data under
# target/servers/postgres (owned by the postgres user when run as root).
#   scripts/postgres.sh start   # installs the Debian package if missing (root/apt),
#                               # initdb on first use, prints
#                               # STREAMFORGE_POSTGRES=postgresql://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop    # keeps the data
#   scripts/postgres.sh reset   # stop and delete the data
# Tests read the connection string from STREAMFORGE_POSTGRES.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${STREAMFORGE_STATE:-$PWD/target/servers}/postgres"
port="${STREAMFORGE_POSTGRES_PORT:-15432}"
pgbin=/usr/lib/postgresql/15/bin

install() {
  if [ -x "$pgbin/pg_ctl" ]; then return; fi
  echo "PostgreSQL 15 not found: installing the Debian package" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root, or: apt-get install -y postgresql-15" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 >&2; }
}

# Runs a command as the postgres user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

conn="postgresql://postgres@127.0.0.1:$port/postgres"

# As root the server runs as the postgres user, who may not be able to reach a
# checkout under /root: then the data lives under /tmp instead.
if [ "$(id -u)" = 0 ] && [ -z "${STREAMFORGE_STATE:-}" ]; then
  mkdir -p "$state"; chown postgres "$state" 2>/dev/null || true
  if ! su postgres -s /bin/bash -c "test -w '$state'" 2>/dev/null; then
    state="/tmp/streamforge-postgres-$port"
  fi
fi

case "${1:-start}" in
  start)
    install
    mkdir -p "$state"
    [ "$(id -u)" = 0 ] && chown postgres "$state"
    if [ ! -f "$state/data/PG_VERSION" ]; then
      as_pg "$pgbin/initdb -D '$state/data' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" > "$state/initdb.log" 2>&1 ||
        { cat "$state/initdb.log" >&2; exit 1; }
    fi
    if as_pg "$pgbin/pg_ctl -D '$state/data' status" >/dev/null 2>&1; then
      echo "STREAMFORGE_POSTGRES=$conn"; exit 0
    fi
    as_pg "$pgbin/pg_ctl -D '$state/data' -l '$state/server.log' -w -t 30 start -o \"-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$state' -c wal_level=logical -c max_prepared_transactions=64 -c max_wal_senders=8 -c max_replication_slots=8 -c fsync=on\"" >&2 ||
      { echo "error: postgres did not start; see $state/server.log" >&2; exit 1; }
    echo "STREAMFORGE_POSTGRES=$conn"
    ;;
  stop)
    if [ -f "$state/data/postmaster.pid" ]; then
      as_pg "$pgbin/pg_ctl -D '$state/data' -m fast -w stop" >&2 || true
    fi
    ;;
  reset)
    "$0" stop
    rm -rf "$state"
    ;;
  *) echo "usage: $0 start|stop|reset" >&2; exit 2 ;;
esac
