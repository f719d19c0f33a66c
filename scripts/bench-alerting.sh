#!/usr/bin/env bash
# Cost of alerting in the main job, -w 2, runs alternating (noisy machine),
# ratio per pair and medians. Two workloads on generated spans with 10,000
# keys (100 services × 100 operators), 60 s windows:
#  broadcast  EVENTS spans at a rate that gives ~50 spans per window and key;
#             240,000 rules (10,000 keys × 24 hours, LOW/MID/HIGH at 2/3/5×
#             the key's mean) from a rule file, broadcast to every worker,
#             alert join + convergence, alerts to JSONL. This is the
#             rule-evaluation cost per window.
#  generated  EVENTS/8 spans over 26 h (rules for the 2nd day come from the
#             1st); the in-job thresholds (differential reduce per hour and
#             key), hourly publisher, broadcast and alert join. About one span
#             per window and key: the worst case, every row is a sample.
#   scripts/bench-alerting.sh [EVENTS] [PAIRS]   # default 48,000,000 events, 3 pairs
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-48000000}"
pairs="${2:-3}"
cargo build --release --quiet
bin=target/release/streamforge
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
job() { # name events hours alerting(no/file/generated)
  local rate
  rate=$(python3 -c "print($2 / ($3 * 3600))")
  cat > "$dir/$1.toml" <<TOML
name = "bench-$1"
[source]
kind = "generator"
events = $2
partitions = 2
services = 100
operators-per-service = 100
events-per-second = $rate
start-ms = 1672531200000
[watermark]
out-of-orderness = "5s"
[window]
kind = "tumbling"
size = "60s"
[[sinks]]
kind = "jsonl"
path = "rows-$1.jsonl"
TOML
  case "$4" in
    file) printf '[alerting]\n[alerting.rules]\nkind = "file"\npath = "rules.jsonl"\n[[alerting.sinks]]\nkind = "jsonl"\npath = "alerts-%s.jsonl"\n' "$1" >> "$dir/$1.toml" ;;
    generated) printf '[alerting]\n[alerting.rules]\nkind = "generated"\n[[alerting.sinks]]\nkind = "jsonl"\npath = "alerts-%s.jsonl"\n' "$1" >> "$dir/$1.toml" ;;
  esac
}
elapsed() { grep -o 'elapsed [0-9.]*' | cut -d' ' -f2; }
pairs_of() { # plain alerting label
  local ratios=()
  for i in $(seq "$pairs"); do
    p=$($bin run "$dir/$1.toml" -w 2 | elapsed)
    a=$($bin run "$dir/$2.toml" -w 2 | tee "$dir/last.txt" | elapsed)
    r=$(python3 -c "print(round($a / $p, 3))")
    ratios+=("$r")
    echo "$3 pair $i: plain ${p}s  alerting ${a}s  ratio $r"
  done
  echo "$3 median ratio: $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (pairs + 1) / 2 ))p")"
  echo "$3 rows $(wc -l < "$dir/rows-$1.jsonl"); $(tail -1 "$dir/last.txt")"
}
job plain "$events" 0.25 no
job file "$events" 0.25 file
# Rules for every key seen and hour: LOW/MID/HIGH at 2/3/5× the key's mean.
$bin run "$dir/plain.toml" -w 2 >/dev/null
python3 - "$dir" <<'PY'
import json, sys, collections
d = sys.argv[1]
s = collections.defaultdict(lambda: [0.0, 0.0, 0])
for line in open(f"{d}/rows-plain.jsonl"):
    r = json.loads(line)
    k = (r["service"], r["operator_name"], r["operator_class"])
    a = s[k]; a[0] += r["avg_duration"]; a[1] += r["max_duration"]; a[2] += 1
with open(f"{d}/rules.jsonl", "w") as out:
    for (svc, op, cls), (avg, mx, n) in s.items():
        avg /= n; mx /= n
        for h in range(24):
            out.write(json.dumps({"hour_of_day": h, "service": svc, "operator_name": op,
                "operator_class": cls, "avg_duration_low": avg * 2, "avg_duration_mid": avg * 3,
                "avg_duration_high": avg * 5, "max_duration_low": mx * 2, "max_duration_mid": mx * 3,
                "max_duration_high": mx * 5, "success_rate_low": 0.9, "success_rate_mid": 0.8,
                "success_rate_high": 0.5, "traffic_volume_low": 1e9, "traffic_volume_mid": 1e9,
                "traffic_volume_high": 1e9, "alarm_template": "{level}: {service} {operator_name} {metric} = {value} (threshold {threshold})",
                "analysis_days": 7, "sample_count": n, "generated_time": "", "last_updated": "", "version": 0}) + "\n")
print(f"rule keys: {len(s)}, rules: {24 * len(s)}")
PY
pairs_of plain file broadcast
# The one-time part: loading the 240,000 rules into every worker's broadcast
# state, measured as the same difference on 100,000 events.
job tiny 100000 0.25 no
job tinyfile 100000 0.25 file
loads=()
for i in $(seq "$pairs"); do
  p=$($bin run "$dir/tiny.toml" -w 2 | elapsed)
  a=$($bin run "$dir/tinyfile.toml" -w 2 | elapsed)
  loads+=("$(python3 -c "print(round($a - $p, 3))")")
done
echo "broadcast state load (240,000 rules, 2 workers): $(printf '%s\n' "${loads[@]}" | sort -n | sed -n "$(( (pairs + 1) / 2 ))p")s (median of ${loads[*]})"
[ "${SKIP_GENERATED:-}" = 1 ] && exit 0
job plain26 $((events / 8)) 26 no
job generated $((events / 8)) 26 generated
pairs_of plain26 generated generated
