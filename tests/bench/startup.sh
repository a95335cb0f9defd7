#!/usr/bin/env bash
# Benchmark: what a writer's start-up costs as the tables' logs grow.
#
# A writer that starts (or gets partitions in a rebalance) must read, for every
# table and every assigned partition, the Kafka offset the table holds (the
# version of its `txn` app id) before it consumes a record. This script builds
# tables on Azurite with COMMITS commits each, then restarts a writer that has
# nothing to do (`run --until-caught-up` on a caught-up lake) RESTARTS times,
# through a counting HTTP proxy (tests/chaos/fault_proxy.py with no faults), and
# prints, per restart, the wall time and the storage requests it made.
#   bash tests/bench/startup.sh                       # 24 partitions, ~45 commits per table
#   PARTITIONS=6 COMMITS=20 bash tests/bench/startup.sh
#   BIN=/path/to/lakestream bash tests/bench/startup.sh   # compare another build
set -euo pipefail
PARTITIONS="${PARTITIONS:-24}"
source "$(dirname "$0")/common.sh"
COMMITS="${COMMITS:-45}"
ROWS="${ROWS:-45000}"
RESTARTS="${RESTARTS:-3}"
PROXY_PORT="${PROXY_PORT:-20917}"

bench_start kafka azurite
PY="$LAKESTREAM_PYTHON"

run_id="startup-$(date +%s)"
work="$(mktemp -d)"
proxy_pid=""
stop_proxy() { [ -z "$proxy_pid" ] || { kill -TERM "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=""; }; }
trap 'stop_proxy; rm -rf "$work"' EXIT

# The writer talks to the proxy, which forwards to Azurite (no faults) and counts.
export LAKESTREAM_LAKE__STORAGE__AZURE_STORAGE_USE_EMULATOR=true
export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$PROXY_PORT"
export LAKESTREAM_LOG_FORMAT=json
lake="az://$LAKESTREAM_TEST_AZURITE_CONTAINER/$run_id"

start_proxy() {
  : >"$work/trace"
  FAULT_PROXY_TRACE="$work/trace" "$PY" tests/chaos/fault_proxy.py --listen "127.0.0.1:$PROXY_PORT" --upstream 127.0.0.1:10000 --rate 0 >"$work/proxy.json" 2>"$work/proxy.err" &
  proxy_pid=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && return; sleep 0.1; done
  echo "the counting proxy did not start: $(cat "$work/proxy.err")" >&2; exit 1
}
requests() { stop_proxy; "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"].get("requests", 0))' "$work/proxy.json"; }
# The requests of the last proxy run by kind: log listings, commit files, checkpoints, data files.
kinds() {
  awk '{ m = $1; t = $2
         if (t ~ /comp=list|restype=container/) k = "LIST"
         else if (t ~ /_delta_log\/[0-9]+\.json/) k = "commit file"
         else if (t ~ /_delta_log\/.*checkpoint/) k = "checkpoint"
         else if (t ~ /_last_checkpoint/) k = "_last_checkpoint"
         else if (t ~ /\.parquet/) k = "data file"
         else k = "other"
         n[m " " k]++ }
       END { for (x in n) printf "%s %d, ", x, n[x] }' "$work/trace" | sed 's/, $//'
}

echo "== produce $ROWS rows of $INPUT to $PARTITIONS partitions"
"$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --input "$INPUT" --limit "$ROWS" \
  --partitions "$PARTITIONS" --mutations 0.05 --seed 1 >"$work/produce.txt"
events=$(grep -o 'produced [0-9]*' "$work/produce.txt" | grep -o '[0-9]*' || echo "$ROWS")

echo "== build the tables: ~$COMMITS commits each (batches of $((events / COMMITS)) records)"
start_proxy
LAKESTREAM_BATCH__MAX_RECORDS=$((events / COMMITS)) LAKESTREAM_MAINTENANCE__ENABLED=false \
  "$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --group "$run_id" --lake "$lake" \
  --until-caught-up >"$work/build.txt" 2>"$work/build.log"
echo "build: $(cat "$work/build.txt"); $(requests) storage requests"
for t in bronze.orders silver.order_lines silver.order_lines_tombstones quarantine.orders; do
  v=$(grep '"message":"committed"' "$work/build.log" | grep "\"table\":\"$t\"" | grep -o '"version":[0-9]*' | tail -1 | grep -o '[0-9]*' || true)
  echo "  $(printf '%-30s' "$t") at version ${v:-?}"
done

echo "== restart a writer on the caught-up lake, $RESTARTS times ($PARTITIONS partitions x 4 tables = $((PARTITIONS * 4)) offsets to read)"
for i in $(seq "$RESTARTS"); do
  start_proxy
  t0=$(date +%s%N)
  LAKESTREAM_MAINTENANCE__ENABLED=false "$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" \
    --group "$run_id" --lake "$lake" --until-caught-up >"$work/restart.txt" 2>"$work/restart.log"
  t1=$(date +%s%N)
  echo "restart $i: $(( (t1 - t0) / 1000000 )) ms, $(requests) storage requests ($(cat "$work/restart.txt"))"
  echo "  by kind: $(kinds)"
done
