#!/usr/bin/env bash
# Checkpoint benchmark (docs/BENCHMARKS.md).
# Usage: scripts/bench-checkpoints.sh [EVENTS]   (default 100,000,000)
#
# 1. Throughput of the main job on the in-memory span generator (two
#    partitions, 48 keys) at -w 2, without checkpoints and with a checkpoint
#    every 1 s (exactly-once sinks), alternating, three times each; checkpoint
#    size and duration from the log.
# 2. Restart to first output with 100 k keys of window state: a 1-hour window
#    over 100,000 keys is stopped with a savepoint near the end of the input,
#    then restored; we time the restored process until its first committed
#    rows (and log how long loading the state took).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000000}"
cargo build --release -q
bin="$PWD/target/release/streamforge"
dir=out/bench-ckpt
mkdir -p $dir
common="name = \"bench-ckpt\"
[source]
kind = \"generator\"
events = $events
partitions = 2
[window]
kind = \"tumbling\"
size = \"60s\""
printf '%s\n[[sinks]]\nkind = "jsonl"\npath = "plain/rows.jsonl"\n' "$common" > $dir/plain.toml
printf '%s\n[[sinks]]\nkind = "jsonl"\npath = "ckpt-out/rows"\n[checkpoint]\ndir = "ckpt"\ninterval = "1s"\n' "$common" > $dir/ckpt.toml
echo "== throughput, $events events, -w 2"
for rep in 1 2 3; do
  for cfg in plain ckpt; do
    printf '%-6s ' $cfg
    RUST_LOG=streamforge_dataflow::checkpoint=info $bin run $dir/$cfg.toml -w 2 2>$dir/$cfg.log | sed 's/.*: //'
  done
done
echo "checkpoints of the last run (bytes, cut-to-manifest duration):"
grep -o 'checkpoint=[0-9]* was_final=[a-z]* bytes=[0-9]* duration_ms="*[0-9.]*' $dir/ckpt.log | sed 's/"//g' | head -12 || true

echo "== restart to first output, 100,000 keys of window state"
cat > $dir/keys.toml <<JOB
name = "bench-restore"
rate-limit = 100000
[source]
kind = "generator"
events = 1000000
partitions = 2
services = 100
operators-per-service = 1000
events-per-second = 100.0
diurnal = false
[window]
kind = "tumbling"
size = "3650days"
[[sinks]]
kind = "jsonl"
path = "keys-out/rows"
[checkpoint]
dir = "keys-ckpt"
interval = "100ms"
JOB
sed '/^rate-limit/d' $dir/keys.toml > $dir/keys-fast.toml
$bin run $dir/keys.toml -w 2 >/dev/null &
pid=$!
sleep 4.5
sp=$($bin savepoint $dir/keys.toml | sed 's/^savepoint //')
wait $pid
echo "savepoint $sp: $(du -sh "$sp" | cut -f1)"
grep -o '"offset":[0-9]*' "$sp/part-sources.bin" | tr '\n' ' '; echo
start=$(date +%s%N)
RUST_LOG=streamforge_operators=info $bin run $dir/keys-fast.toml -w 2 --restore "$sp" >$dir/restore.out 2>$dir/restore.log &
pid=$!
while ! ls $dir/keys-out/rows/part-* >/dev/null 2>&1; do sleep 0.005; done
first=$(date +%s%N)
wait $pid
end=$(date +%s%N)
grep -o 'entries=[0-9]* ms="*[0-9.]*' $dir/restore.log | sed 's/"//g; s/^/state loaded: /' || true
echo "restart to first committed rows: $(( (first - start) / 1000000 )) ms; to exit: $(( (end - start) / 1000000 )) ms"
echo "rows: $(cat $dir/keys-out/rows/part-* | wc -l)"
