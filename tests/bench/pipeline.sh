#!/usr/bin/env bash
# Benchmark: produce the whole dataset to the local broker, then time
# `lakestream run --until-caught-up` into a fresh lake on the local disk.
# Prints produce events/s, writer events/s and MB/s, peak RSS, CPU by thread and how
# often a core was idle (threads.py), commits and files, and
# the same topic read by a bare native consumer (examples/bare_consume.rs: librdkafka,
# same settings, no decoding, no tables) with the ratio: how close the writer gets to
# what the broker serves.
#   bash tests/bench/pipeline.sh                 # bronze + silver + quarantine, 5 % mutations
#   MUTATIONS=0 bash tests/bench/pipeline.sh     # inserts only
#   REPEAT=3 bash tests/bench/pipeline.sh        # the dataset 3 times (new transaction numbers, later dates)
#   KEEP_LOG=/tmp/run.log ...                    # keep the writer's JSON log (one line per commit)
# The local broker (nisshi, in memory) keeps every benchmark topic: a REPEAT=19 run adds
# ~4.5 GB to it. Restart it between large runs: tests/stack/stack.sh stop kafka; ... start kafka
set -euo pipefail
source "$(dirname "$0")/common.sh"
export LAKESTREAM_LOG_FORMAT=json
MUTATIONS="${MUTATIONS:-0.05}"
REPEAT="${REPEAT:-1}"
bench_start kafka

run_id="bench-$(date +%s)"
topic="$run_id"
lake="$(mktemp -d)/lake"
work="$(mktemp -d)"
trap 'rm -rf "$lake" "$work"' EXIT

echo "== produce: $INPUT x $REPEAT, mutations $MUTATIONS, $PARTITIONS partitions"
"$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$topic" --input "$INPUT" \
  --partitions "$PARTITIONS" --mutations "$MUTATIONS" --seed 1 --replays "$REPEAT" | tee "$work/produce.txt"

echo "== run --until-caught-up into $lake"
start=$(date +%s.%N)
/usr/bin/time -f "%M %U %S %e" -o "$work/rss_kb" "$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$topic" \
  --group "$run_id" --lake "$lake" --until-caught-up 2>"$work/run.log" >"$work/run.txt" &
timer=$!
# The writer's resident memory once a second, to show whether it stays flat as the tables
# grow; sampled beside the run, so that the wall time is not rounded up to the sampling.
(
  writer=""
  while kill -0 "$timer" 2>/dev/null; do
    [ -n "$writer" ] || writer=$(pgrep -P "$timer" -f "lakestream run" || true)
    [ -n "$writer" ] && awk '/VmRSS/ {print $2}' "/proc/$writer/status" 2>/dev/null >> "$work/rss_samples" || true
    sleep 1
  done
) &
sampler=$!
python3 tests/bench/threads.py "$timer" > "$work/threads" 2>/dev/null &
threads=$!
wait "$timer"
end=$(date +%s.%N)
wait "$sampler" "$threads" 2>/dev/null || true
cat "$work/run.txt"

events=$(grep -o 'wrote [0-9]*' "$work/run.txt" | grep -o '[0-9]*')
bytes=$(grep -o '"bytes":[0-9]*' "$work/run.log" | grep -o '[0-9]*' | paste -sd+ | bc)
read -r rss_kb cpu_user cpu_sys cpu_wall < "$work/rss_kb"
secs=$(echo "$end - $start" | bc -l)
echo
echo "records:            $events"
echo "wall time:          $(printf %.1f "$secs") s (process start to exit, incl. table creation and group join)"
echo "throughput:         $(echo "$events / $secs" | bc) events/s"
# The writer's own span (its first log line to "lakestream writer stopped"): the same
# figure without process start and exit, for comparing builds whose exits differ.
span=$(python3 - "$work/run.log" <<'PY'
import json, sys
from datetime import datetime
stamps = [(datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00")), j.get("message", ""))
          for j in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))]
end = [t for t, m in stamps if m == "lakestream writer stopped"]
print(f"{(end[-1] - stamps[0][0]).total_seconds():.3f}" if end else "0")
PY
)
echo "writer span:        $span s (first log line to 'writer stopped'): $(echo "$events / $span" | bc 2>/dev/null || echo -) events/s"
echo "Kafka payload:      $(echo "scale=1; ${bytes:-0} / 1048576" | bc) MB, $(echo "scale=1; ${bytes:-0} / 1048576 / $secs" | bc) MB/s"
echo "peak RSS:           $((rss_kb / 1024)) MB"
# user + system CPU over wall time: how many of the machine's cores the writer kept busy.
echo "CPU:                ${cpu_user} s user + ${cpu_sys} s system in ${cpu_wall} s: $(echo "scale=2; ($cpu_user + $cpu_sys) / $cpu_wall" | bc) cores busy of $(nproc)"
cat "$work/threads"
for t in bronze/orders silver/order_lines silver/order_lines_tombstones quarantine/orders; do
  commits=$(find "$lake/$t/_delta_log" -name '*.json' | wc -l)
  files=$(find "$lake/$t" -name '*.parquet' -not -path '*/_delta_log/*' | wc -l)
  echo "$(printf '%-32s' "$t:") $commits commits, $files parquet files"
done
grep '"message":"committed"' "$work/run.log" | grep '"table":"silver.order_lines"' \
  | grep -o '"ms":[0-9]*' | grep -o '[0-9]*' > "$work/merge_ms" || true
if [ -s "$work/merge_ms" ]; then
  n=$(wc -l < "$work/merge_ms")
  parts=$(( n < 10 ? n : 10 ))
  echo "silver MERGE ms per batch, mean by $parts parts of the run (n=$n): $(split -n l/$parts -d "$work/merge_ms" "$work/part_q" && for f in "$work"/part_q*; do awk '{s+=$1} END {if (NR) printf "%d ", s/NR}' "$f"; done)"
fi
if [ -s "$work/rss_samples" ]; then
  samples=$(wc -l < "$work/rss_samples")
  parts=$(( samples < 10 ? samples : 10 ))
  echo "writer RSS MB, max by $parts parts of the run (1 s samples): $(split -n l/$parts -d "$work/rss_samples" "$work/part_r" && for f in "$work"/part_r*; do awk 'BEGIN {m=0} {if ($1>m) m=$1} END {if (NR) printf "%d ", m/1024}' "$f"; done)"
fi
bare=$("$BARE" "$LAKESTREAM_TEST_BROKERS" "$topic" 2>/dev/null)
bare_records=${bare% *}
bare_secs=${bare#* }
bare_rate=$(echo "$bare_records / $bare_secs" | bc)
echo "bare consume:       $bare_records records in $bare_secs s: $bare_rate events/s (librdkafka only)"
echo "writer / bare:      $(echo "scale=3; ($events / $secs) / $bare_rate" | bc)"
if [ -n "${KEEP_LOG:-}" ]; then cp "$work/run.log" "$KEEP_LOG" && echo "run log kept at $KEEP_LOG"; fi
