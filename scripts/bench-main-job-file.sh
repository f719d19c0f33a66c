#!/usr/bin/env bash
# The main job before/after it became a job file over a schema, in one run
# with the sides alternating: OLD_BIN (the binary of an earlier commit, e.g.
# the one before issue 13, which has no `--set`) runs the span-mapping job,
# the current binary the span-mapping job and the job file over a schema;
# the rows (and rules and alerts) are checked byte-identical (sorted). The
# old side runs copies of the job files with its paths rewritten, so any
# binary that reads them works.
# Usage: scripts/bench-main-job-file.sh OLD_BIN [EVENTS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
old="$1"; events="${2:-2000000}"; repeats="${3:-3}"
cargo build --release --bin streamforge --quiet
new=target/release/streamforge
dir="$(pwd)/out/bench-main-job-file"; mkdir -p "$dir"
[ -f "$dir/spans.jsonl" ] || $new generate --events "$events" --out "$dir/spans.jsonl" >/dev/null
# `events/s N` and the peak RSS (kB) of one run: "RATE RSS".
run() { local t; t=$(mktemp); /usr/bin/time -f "%M" -o "$t" "$@" > "$t.out"
  echo "$(sed -n 's/.*events\/s \([0-9]*\).*/\1/p' "$t.out" | tail -1) $(tail -1 "$t")"; rm -f "$t" "$t.out"; }
# The old side's job files: copies beside the originals (shared-data paths stay
# relative), outputs and input under $dir.
gen=examples/jobs/.bench-old-generated.toml; tt=examples/jobs/.bench-old-trainticket.toml
trap 'rm -f "$gen" "$tt"' EXIT
sed -e "s|^paths = .*|paths = [\"$dir/spans.jsonl\"]|" -e "s|^path = .*|path = \"$dir/old.jsonl\"|" \
  examples/jobs/generated-spans.toml > "$gen"
sed -e "s|\.\./\.\./out/trainticket-alerts/\([a-z_]*\)\.jsonl|$dir/old-\1|" examples/jobs/trainticket-alerts.toml > "$tt"
shared="${STREAMFORGE_SHARED_DATA:-$(pwd)/../shared/data}"
days="['$shared/nezha/trainticket/spans_2023-01-29.csv.gz', '$shared/nezha/trainticket/spans_2023-01-30.csv.gz']"
for r in $(seq "$repeats"); do
  for w in 1 2; do
    read -r a am < <(run $old run "$gen" -w $w)
    read -r s sm < <(run $new run examples/jobs/generated-spans.toml -w $w --set "source.paths=['$dir/spans.jsonl']" \
      --set "sinks.0.path='$dir/span.jsonl'")
    read -r b bm < <(run $new run examples/jobs/generated-spans-schema.toml -w $w --set "source.paths=['$dir/spans.jsonl']" \
      --set "sinks.0.path='$dir/new.jsonl'" --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'")
    for f in span new; do
      cmp -s <(sort "$dir/old.jsonl") <(sort "$dir/$f.jsonl") || { echo "rows differ ($f)" >&2; exit 1; }
    done
    echo "generated spans (JSONL, 1 file) w=$w run $r: old span mapping $a/s ${am}kB  new span mapping $s/s ${sm}kB" \
      " new job file $b/s ${bm}kB  file/old $(echo "scale=2; $b / $a" | bc)  file/span $(echo "scale=2; $b / $s" | bc)"
    read -r a am < <(run $old run "$tt" -w $w)
    read -r b bm < <(run $new run examples/jobs/operator-metrics-alerts.toml -w $w --set "source.paths=$days" \
      --set "sinks.0.path='$dir/new-flink_operator_agg_result'" --set "alerting.publish.jsonl='$dir/new-alarm_rules'" \
      --set "alerting.sinks.0.path='$dir/new-alerts'" --set "late-output='$dir/late.jsonl'" --set "dead-letter='$dir/dead.jsonl'")
    for f in flink_operator_agg_result alarm_rules alerts; do
      cmp -s <(sort "$dir/old-$f") <(sort "$dir/new-$f") || { echo "$f differ" >&2; exit 1; }
    done
    echo "TrainTicket 2 days + alerting (CSV.gz, 2 files) w=$w run $r: old span mapping $a/s ${am}kB" \
      " new job file $b/s ${bm}kB  ratio $(echo "scale=2; $b / $a" | bc)"
  done
done
