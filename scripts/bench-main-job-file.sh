#!/usr/bin/env bash
# The main job before/after it became a job file over a schema, in one run
# with the sides alternating: OLD_BIN (the binary of an earlier commit) runs
# the span-mapping job and the job file ("file before"), the current binary
# the job file ("file after"); the rows are checked byte-identical (sorted).
# Usage: scripts/bench-main-job-file.sh OLD_BIN [EVENTS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
old="$1"; events="${2:-2000000}"; repeats="${3:-3}"
cargo build --release --bin streamforge --quiet
new=target/release/streamforge
dir="$(pwd)/out/bench-main-job-file"; mkdir -p "$dir"
[ -f "$dir/spans.jsonl" ] || $new generate --events "$events" --out "$dir/spans.jsonl" >/dev/null
rate() { sed -n 's/.*events\/s \([0-9]*\).*/\1/p' | tail -1; }
shared="${STREAMFORGE_SHARED_DATA:-$(pwd)/../shared/data}"
days="['$shared/nezha/trainticket/spans_2023-01-29.csv.gz', '$shared/nezha/trainticket/spans_2023-01-30.csv.gz']"
for r in $(seq "$repeats"); do
  for w in 1 2; do
    a=$($old run examples/jobs/generated-spans.toml -w $w --set "source.paths=['$dir/spans.jsonl']" \
      --set "sinks.0.path='$dir/old.jsonl'" | rate)
    f=$($old run examples/jobs/generated-spans-schema.toml -w $w --set "source.paths=['$dir/spans.jsonl']" \
      --set "sinks.0.path='$dir/before.jsonl'" --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'" | rate)
    b=$($new run examples/jobs/generated-spans-schema.toml -w $w --set "source.paths=['$dir/spans.jsonl']" \
      --set "sinks.0.path='$dir/new.jsonl'" --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'" | rate)
    cmp -s <(sort "$dir/old.jsonl") <(sort "$dir/new.jsonl") || { echo "rows differ" >&2; exit 1; }
    echo "generated spans (JSONL, 1 file) w=$w run $r: span mapping $a  file before $f  file after $b" \
      " after/before $(echo "scale=2; $b / $f" | bc)  after/span $(echo "scale=2; $b / $a" | bc)"
    a=$($old run examples/jobs/trainticket-alerts.toml -w $w --set "source.paths=$days" \
      --set "sinks.0.path='$dir/old-tt'" --set "alerting.publish.jsonl='$dir/old-rules'" \
      --set "alerting.sinks.0.path='$dir/old-alerts'" --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'" | rate)
    b=$($new run examples/jobs/operator-metrics-alerts.toml -w $w --set "source.paths=$days" \
      --set "sinks.0.path='$dir/new-tt'" --set "alerting.publish.jsonl='$dir/new-rules'" \
      --set "alerting.sinks.0.path='$dir/new-alerts'" --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'" | rate)
    for f in tt rules alerts; do
      cmp -s <(sort "$dir/old-$f") <(sort "$dir/new-$f") || { echo "$f differ" >&2; exit 1; }
    done
    echo "TrainTicket 2 days + alerting (CSV.gz, 2 files) w=$w run $r: old $a  new $b  ratio $(echo "scale=2; $b / $a" | bc)"
  done
done
