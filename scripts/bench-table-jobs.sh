#!/usr/bin/env bash
# Benchmarks of the job-file layer, as ratios measured in one run with the
# two sides alternating (the machine is shared and noisy):
#  1. dynamic rows vs typed API: examples/jobs/window-tumble.toml vs
#     examples/window_tumble.rs, same input, same CSV (checked identical);
#  2. the orders pipeline (job file) from files at 1 and 2 workers.
# Usage: scripts/bench-table-jobs.sh [EVENTS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-2000000}"; repeats="${2:-3}"
cargo build --release --bin streamforge --example window_tumble --quiet
bin=target/release/streamforge
dir=out/bench-table-jobs; mkdir -p "$dir"
[ -f "$dir/spans.jsonl" ] || $bin generate --events "$events" --out "$dir/spans.jsonl" >/dev/null
[ -f "$dir/orders-0.jsonl" ] || $bin generate orders --events "$events" --rate 200 --partitions 2 --out "$dir/orders.jsonl" >/dev/null
rate() { sed -n 's/.*events\/s \([0-9]*\).*/\1/p' | tail -1; }
abs="$(pwd)/$dir"
for w in 1 2; do
  for r in $(seq "$repeats"); do
    file=$($bin run examples/jobs/window-tumble.toml -w $w --set "source.paths=['$abs/spans.jsonl']" \
      --set "sinks.0.path='$abs/tumble-file.csv'" --set "dead-letter='$abs/dead.jsonl'" | rate)
    api=$(target/release/examples/window_tumble "$abs/spans.jsonl" "$abs/tumble-api.csv" -w $w | rate)
    cmp -s <(sort "$dir/tumble-file.csv") <(sort "$dir/tumble-api.csv") || { echo "outputs differ" >&2; exit 1; }
    echo "window-tumble w=$w run $r: job file $file events/s, typed API $api events/s, ratio $(echo "scale=2; $file / $api" | bc)"
  done
done
for w in 1 2; do
  for r in $(seq "$repeats"); do
    o=$($bin run examples/jobs/orders.toml -w $w --set "source={kind = \"file\", paths = [\"$abs/orders-*.jsonl\"]}" \
      --set "sinks=[{kind = \"jsonl\", path = \"$abs/orders-out\"}]" --set "checkpoint.dir='$abs/orders-ckpt'" \
      --set "dead-letter='$abs/orders-anomalies'" | rate)
    echo "orders (file, checkpoints every 1 s) w=$w run $r: $o events/s"
  done
done
