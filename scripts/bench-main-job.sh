#!/usr/bin/env bash
# Benchmark of the main job on generated JSONL spans (docs/BENCHMARKS.md).
# Usage: scripts/bench-main-job.sh [EVENTS]   (default 10,000,000)
# Generates out/bench/spans.jsonl (one file) and out/bench/spans-{0,1}.jsonl (two
# partitions), then runs the job at -w 1 and -w 2, three times each, alternating,
# and prints events/s and peak RSS per run.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-10000000}"
cargo build --release -q
bin=target/release/streamforge
mkdir -p out/bench
[ -s out/bench/spans.jsonl ] || $bin generate --events "$events" --out out/bench/spans.jsonl
[ -s out/bench/spans-1.jsonl ] || $bin generate --events "$events" --out out/bench/spans.jsonl --partitions 2
ls -l out/bench/*.jsonl
job() { # $1 = paths
  sed -e "s|\"../../out/spans.jsonl\"|$1|" -e "s|../../out/generated/|../../out/bench/|" examples/jobs/generated-spans.toml
}
job '"../../out/bench/spans.jsonl"' > examples/jobs/.bench-1file.toml
job '"../../out/bench/spans-*.jsonl"' > examples/jobs/.bench-2files.toml
for rep in 1 2 3; do
  for cfg in "1file 1" "1file 2" "2files 1" "2files 2"; do
    set -- $cfg
    printf '%-7s -w %s  ' "$1" "$2"
    /usr/bin/time -f "peak_rss_mb %M" -o out/bench/time.txt \
      $bin run "examples/jobs/.bench-$1.toml" -w "$2" | sed 's/.*: //' | tr '\n' ' '
    awk '{printf "peak_rss_mb %.1f\n", $2/1024}' out/bench/time.txt
  done
done
rm -f examples/jobs/.bench-*.toml
