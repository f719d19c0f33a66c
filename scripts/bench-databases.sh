#!/usr/bin/env bash
# Throughput of the ClickHouse and PostgreSQL sinks on this machine: the main
# job on generated spans with many keys (so many rows), -w 2, written to a
# JSONL file only (baseline), to ClickHouse, and to PostgreSQL; without
# checkpoints (batched sink) and with 1 s checkpoints (write-ahead-log sink).
# Needs the servers: eval "$(scripts/clickhouse.sh start)"; eval "$(scripts/postgres.sh start)"
#   scripts/bench-databases.sh [EVENTS]   # default 4,000,000 events
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-4000000}"
: "${STREAMFORGE_CLICKHOUSE:?start ClickHouse: eval \"\$(scripts/clickhouse.sh start)\"}"
: "${STREAMFORGE_POSTGRES:?start PostgreSQL: eval \"\$(scripts/postgres.sh start)\"}"
cargo build --release --quiet
bin=target/release/streamforge
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
$bin schema clickhouse --apply --db sf_bench >/dev/null 2>&1
psql "$STREAMFORGE_POSTGRES" -qc "CREATE SCHEMA IF NOT EXISTS sf_bench" >/dev/null
$bin schema postgres >"$dir/pg.sql"
psql "$STREAMFORGE_POSTGRES" -q -v ON_ERROR_STOP=1 -c "SET search_path TO sf_bench" -f "$dir/pg.sql" >/dev/null 2>&1 ||
  psql "$STREAMFORGE_POSTGRES" -q -c "SET search_path TO sf_bench; $(cat "$dir/pg.sql")" >/dev/null

job() { # name sink checkpoint
  local ck=""
  [ "$3" = yes ] && ck=$'[checkpoint]\ndir = "ckpt-'"$1"$'"\ninterval = "1s"'
  cat > "$dir/$1.toml" <<TOML
name = "bench-$1"
$ck
[source]
kind = "generator"
events = $events
partitions = 2
services = 100
operators-per-service = 50
events-per-second = 5000
[watermark]
out-of-orderness = "5s"
[window]
kind = "tumbling"
size = "10s"
$2
TOML
}
ch=$'[[sinks]]\nkind = "clickhouse"\nurl = "${STREAMFORGE_CLICKHOUSE}"\ndatabase = "sf_bench"\ntable = "flink_operator_agg_result"'
pg=$'[[sinks]]\nkind = "postgres"\nurl = "${STREAMFORGE_POSTGRES}"\ntable = "sf_bench.flink_operator_agg_result"\nkey-columns = ["window_start_ms", "windowSize", "service", "operator_name", "operator_class"]'

printf "| sink | checkpoints | rows | elapsed s | rows/s | vs JSONL |\n|---|---|---|---|---|---|\n"
for ckpt in no yes; do
  base=""
  jsonl=$'[[sinks]]\nkind = "jsonl"\npath = "rows-'"$ckpt"'"'
  for s in jsonl ch pg; do
    curl -s "$STREAMFORGE_CLICKHOUSE/" --data-binary "TRUNCATE TABLE sf_bench.flink_operator_agg_result" >/dev/null
    psql "$STREAMFORGE_POSTGRES" -qc "TRUNCATE sf_bench.flink_operator_agg_result" >/dev/null
    job "$s-$ckpt" "${!s}" "$ckpt"
    line="$($bin run "$dir/$s-$ckpt.toml" -w 2 2>/dev/null | tail -1)"
    rows="$(sed -E 's/.*rows ([0-9]+).*/\1/' <<<"$line")"
    secs="$(sed -E 's/.*elapsed ([0-9.]+)s.*/\1/' <<<"$line")"
    [ -z "$base" ] && base="$secs"
    printf "| %s | %s | %s | %s | %.0f | %.2f× time |\n" "$s" "$ckpt" "$rows" "$secs" \
      "$(echo "$rows / $secs" | bc -l)" "$(echo "$secs / $base" | bc -l)"
  done
done
