#!/usr/bin/env bash
# The main job, locally, end to end on a fresh machine: builds lakestream, starts
# the local stack, replays the order dataset into the `orders` topic (with 5 %
# mutations), runs the writer until it has caught up, and shows what the tables
# hold through an independent reader (DuckDB's Delta extension).
#   LAKE=./lake INPUT=../shared/data/sales-transaction-v4a.csv.gz bash quickstart.sh
set -euo pipefail
cd "$(dirname "$0")"
export LAKESTREAM_CACHE="${LAKESTREAM_CACHE:-$HOME/.cache/lakestream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKESTREAM_CACHE/target}"
INPUT="${INPUT:-../shared/data/sales-transaction-v4a.csv.gz}"
LAKE="${LAKE:-./lake}"
TOPIC="${TOPIC:-orders}"

echo "== building lakestream (release)"
cargo build --release --locked
BIN="$CARGO_TARGET_DIR/release/lakestream"

echo "== starting the local stack"
tests/stack/stack.sh start
eval "$(tests/stack/stack.sh env)"

echo "== producing $INPUT to topic $TOPIC"
"$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$TOPIC" --input "$INPUT" --partitions 6 --mutations 0.05 --seed 1

echo "== writing the tables under $LAKE until caught up"
"$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$TOPIC" --group lakestream-quickstart --lake "$LAKE" --until-caught-up

echo "== what an independent reader (DuckDB) sees"
for table in bronze/orders silver/order_lines quarantine/orders; do
  "$LAKESTREAM_PYTHON" tests/stack/duckdb_delta.py --table "$LAKE/$table" --sql "SELECT '$table' AS table_name, count(*) AS rows FROM t"
done
echo "-- revenue by country (silver, top 5)"
"$LAKESTREAM_PYTHON" tests/stack/duckdb_delta.py --table "$LAKE/silver/order_lines" \
  --sql "SELECT country, sum(line_total) AS revenue, count(*) AS order_lines FROM t GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
echo "done: the tables are under $LAKE; stop the stack with tests/stack/stack.sh stop"
echo "(running it again replays the dataset into the same topic: bronze grows, silver stays the same)"
