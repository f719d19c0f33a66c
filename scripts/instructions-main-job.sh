#!/usr/bin/env bash
# Instructions (and D1 misses) per event of the main job, span mapping vs job
# file, counted by valgrind's cachegrind: deterministic, unlike wall time on a
# shared machine, so a change of a few percent shows. Usage:
#   scripts/instructions-main-job.sh [BIN ...]   (default: target/release/streamforge)
# Needs valgrind (apt-get install valgrind). 200 k generated spans, -w 1.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=("$@"); [ ${#bins[@]} -gt 0 ] || bins=(target/release/streamforge)
dir="$(pwd)/out/instructions-main-job"; mkdir -p "$dir"
events=200000
[ -f "$dir/spans.jsonl" ] || "${bins[0]}" generate --events $events --out "$dir/spans.jsonl" >/dev/null
count() { # BIN JOB [--set …]: instructions and D1 misses per event
  local bin=$1; shift
  valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null "$bin" run "$@" -w 1 \
    --set "source.paths=['$dir/spans.jsonl']" >/dev/null 2>"$dir/cg.txt"
  awk -v n=$events '/I *refs:/ {gsub(",","",$4); i=$4} /D1  misses:/ {gsub(",","",$4); d=$4}
    END {printf "%6.0f instr/event  %5.1f D1 misses/event", i/n, d/n}' "$dir/cg.txt"
}
for b in "${bins[@]}"; do
  s=$(count "$b" examples/jobs/generated-spans.toml --set "sinks.0.path='$dir/span.jsonl'")
  f=$(count "$b" examples/jobs/generated-spans-schema.toml --set "sinks.0.path='$dir/file.jsonl'" \
    --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'")
  cmp -s <(sort "$dir/span.jsonl") <(sort "$dir/file.jsonl") || { echo "rows differ" >&2; exit 1; }
  echo "$b: span mapping $s | job file $f"
done
