#!/usr/bin/env bash
# Benchmark: 1 writer against WRITERS writers in one consumer group, on one topic of
# PARTITIONS partitions (the dataset with 5 % mutations), each run into a fresh lake with
# --until-caught-up. Prints wall time, events/s, commits, conflicts and retries per
# commit, and the peak RSS of each writer.
#   bash tests/bench/scale.sh                        # 1 and 3 writers, 12 partitions
#   WRITERS=2 PARTITIONS=6 bash tests/bench/scale.sh
#   REPLAYS=5 bash tests/bench/scale.sh             # 2.8M events: long enough for 3 writers to share
set -euo pipefail
source "$(dirname "$0")/common.sh"
export LAKESTREAM_LOG_FORMAT=json
WRITERS="${WRITERS:-3}"
PARTITIONS="${PARTITIONS:-12}"
REPLAYS="${REPLAYS:-1}" # the dataset this many times (new keys each time): a longer run, so the writers share it
bench_start kafka

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
topic="scale-$(date +%s)"
"$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$topic" --input "$INPUT" \
  --partitions "$PARTITIONS" --mutations 0.05 --seed 1 --replays "$REPLAYS" | tail -1

for n in 1 "$WRITERS"; do
  group="$topic-$n"
  lake="$work/lake-$n"
  start=$(date +%s.%N)
  pids=()
  for i in $(seq 1 "$n"); do
    /usr/bin/time -f "%M" -o "$work/rss-$n-$i" "$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$topic" \
      --group "$group" --lake "$lake" --until-caught-up 2>"$work/run-$n-$i.log" >"$work/run-$n-$i.txt" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  end=$(date +%s.%N)
  secs=$(echo "$end - $start" | bc -l)
  records=$(cat "$work"/run-$n-*.txt | grep -o 'wrote [0-9]*' | grep -o '[0-9]*' | paste -sd+ | bc)
  commits=$(cat "$work"/run-$n-*.log | grep -c '"message":"committed"' || true)
  conflicts=$(cat "$work"/run-$n-*.log | grep '"message":"committed"' | grep -o '"conflicts":[0-9]*' | grep -o '[0-9]*' | paste -sd+ | bc)
  retries=$(cat "$work"/run-$n-*.log | grep -c 'batch commit failed; retrying' || true)
  # Lost races silver's upsert committed past without applying the batch again.
  races=$(cat "$work"/run-$n-*.log | grep '"message":"merged"' | grep -o '"races":[0-9]*' | grep -o '[0-9]*' | paste -sd+ | bc || true)
  rss=$(for i in $(seq 1 "$n"); do echo -n "$(( $(cat "$work/rss-$n-$i") / 1024 )) "; done)
  echo "$n writer(s): $records records in $(printf %.1f "$secs") s = $(echo "$records / $secs" | bc) events/s;" \
    "$commits table commits, $conflicts conflicts ($(echo "scale=2; $conflicts / $commits" | bc) per commit), $retries batch retries, ${races:-0} silver races committed past; peak RSS MB: $rss"
done
