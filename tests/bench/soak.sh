#!/usr/bin/env bash
# Benchmark: a live soak with the default configuration. `run` is live while `produce
# --rate` replays the dataset at a steady rate for DURATION seconds; the writer's RSS is
# sampled every 10 s. At the end: what each table holds (examples/table_state.rs: version,
# active files, _delta_log entries, snapshot load time) and the RSS over time.
#   bash tests/bench/soak.sh                         # 3,600 s at 1,000 events/s
#   DURATION=600 RATE=1000 bash tests/bench/soak.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
export LAKESTREAM_LOG_FORMAT=json
DURATION="${DURATION:-3600}"
RATE="${RATE:-1000}"
bench_start kafka
if [ -z "${STATE:-}" ]; then
  cargo build --release --locked --quiet --example table_state
  STATE="$CARGO_TARGET_DIR/release/examples/table_state"
fi

work="${WORK:-$(mktemp -d)}"
mkdir -p "$work"
run_id="soak-$(date +%s)"
lake="$work/lake"
writer="" producer=""
trap '[ -n "$producer" ] && kill "$producer" 2>/dev/null; [ -n "$writer" ] && kill "$writer" 2>/dev/null; true' EXIT

"$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --input "$INPUT" --limit 1 --partitions "$PARTITIONS" >/dev/null
"$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --group "$run_id" --lake "$lake" 2>"$work/run.log" >/dev/null &
writer=$!
replays=$(( DURATION * RATE / 500000 + 1 ))
"$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$run_id" --input "$INPUT" --rate "$RATE" \
  --mutations 0.05 --seed 1 --replays "$replays" >"$work/produce.txt" 2>&1 &
producer=$!
echo "== soak: $RATE events/s for $DURATION s, default configuration; work dir $work"
start=$(date +%s)
: > "$work/rss"
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  kill -0 "$writer" 2>/dev/null || { echo "the writer exited early:"; tail -5 "$work/run.log"; exit 1; }
  echo "$(( $(date +%s) - start )) $(awk '/VmRSS/ {print $2}' "/proc/$writer/status")" >> "$work/rss"
  sleep 10
done
kill "$producer"; producer=""
kill -TERM "$writer"; wait "$writer" || true; writer=""
batches=$(grep -c '"message":"batch committed"' "$work/run.log" || true)
records=$(grep '"message":"batch committed"' "$work/run.log" | grep -o '"records":[0-9]*' | grep -o '[0-9]*' | paste -sd+ | bc)
echo "records committed:  $records in $batches batches"
echo "writer RSS MB every 5 min (elapsed s: MB):"
awk 'NR % 30 == 1 {printf "  %5d: %d\n", $1, $2 / 1024} END {printf "  %5d: %d (last)\n", $1, $2 / 1024}' "$work/rss"
echo "writer RSS MB, max of each tenth of the run: $(split -n l/10 -d "$work/rss" "$work/part_r" && for f in "$work"/part_r*; do awk 'BEGIN {m=0} {if ($2>m) m=$2} END {if (NR) printf "%d ", m/1024}' "$f"; done)"
maint=$(grep -c '"message":"maintained"' "$work/run.log" || true)
echo "maintenance rounds that changed something: $maint"
"$STATE" "$lake/bronze/orders" "$lake/silver/order_lines" "$lake/silver/order_lines_tombstones" "$lake/quarantine/orders"
