#!/usr/bin/env bash
# Benchmark: freshness of a live stream with the default configuration. `run` is live
# (no --until-caught-up, no batch settings) while `produce --rate` replays the dataset at
# a steady rate; then each row's freshness is computed from the tables themselves
# (tests/bench/freshness.py: commit timestamp of the first version holding the row minus
# its Kafka timestamp). Prints p50/p90/p99/max per table for each rate.
#   bash tests/bench/freshness.sh                  # 5,000 and 50,000 events/s
#   RATES="5000" EVENTS=100000 bash tests/bench/freshness.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
export LAKESTREAM_LOG_FORMAT=json
RATES="${RATES:-5000 50000}"
EVENTS="${EVENTS:-100000}"
MUTATIONS="${MUTATIONS:-0.05}"
bench_start kafka

work="$(mktemp -d)"
writer=""
trap '[ -n "$writer" ] && kill "$writer" 2>/dev/null; rm -rf "$work"' EXIT

# Waits (up to $2 s) until the writer's log shows at least $1 records committed.
wait_committed() {
  local want=$1 deadline=$(( $(date +%s) + $2 )) got=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    got=$( (grep '"message":"batch committed"' "$work/run.log" 2>/dev/null || true) | grep -o '"records":[0-9]*' | grep -o '[0-9]*' | paste -sd+ | bc || true)
    got=${got:-0}
    [ "$got" -ge "$want" ] && return 0
    sleep 0.2
  done
  echo "timed out: the writer committed $got of $want records" >&2
  return 1
}

for rate in $RATES; do
  run_id="fresh-$rate-$(date +%s)"
  lake="$work/lake-$rate"
  # One record creates the topic, so that the writer can start before the measured phase.
  "$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --input "$INPUT" --limit 1 --partitions "$PARTITIONS" >/dev/null
  : > "$work/run.log"
  "$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --group "$run_id" --lake "$lake" 2>"$work/run.log" >/dev/null &
  writer=$!
  wait_committed 1 60
  since_ms=$(( $(date +%s%N) / 1000000 ))
  "$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --input "$INPUT" --limit "$EVENTS" \
    --rate "$rate" --mutations "$MUTATIONS" --seed 1 | tee "$work/produce.txt"
  produced=$(grep -o '^produced [0-9]*' "$work/produce.txt" | grep -o '[0-9]*')
  wait_committed $(( produced + 1 )) 300
  kill -TERM "$writer"; wait "$writer" || true; writer=""
  batches=$(grep -c '"message":"batch committed"' "$work/run.log" || true)
  echo "== $rate events/s, $produced events, default configuration: $batches batches"
  "$LAKESTREAM_PYTHON" tests/bench/freshness.py --lake "$lake" --since-ms "$since_ms"
done
