#!/usr/bin/env bash
# Benchmark: does a batch cost more, in time or memory, when silver is big?
#
# The same input is written twice: one more year of the shop's business (replay
# number REPEAT of the dataset, new transaction numbers and months, 5 % mutations)
# into an empty lake, and into a lake grown first to ~10M order lines by replays
# 0..REPEAT-1. Same batches, same months touched, only the size of the tables
# differs, so any difference is the cost of the table's size. (A single growing
# run mixes that with how many months each batch spans: while catching up a
# backlog, the consumer drifts apart across partitions and later batches span
# more months; see BENCHMARKS.md.)
#   bash tests/bench/flat.sh                 # REPEAT=19: ~10.2M order lines before the probe
#   MAINTAIN=1 bash tests/bench/flat.sh      # run `lakestream maintain` on the grown lake first
# Restart the broker before (nisshi keeps topics in memory; this adds ~4.7 GB):
#   tests/stack/stack.sh stop kafka; tests/stack/stack.sh start kafka
set -euo pipefail
source "$(dirname "$0")/common.sh"
REPEAT="${REPEAT:-19}"
bench_start kafka
export LAKESTREAM_LOG_FORMAT=json

id="flat-$(date +%s)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
produce() { "$BIN" produce --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$1" --input "$INPUT" --partitions "$PARTITIONS" \
  --mutations 0.05 --seed 1 "${@:2}" 2>/dev/null; }
# run TOPIC LAKE NAME: writes TOPIC into LAKE until caught up; keeps the log and the peak RSS.
run() { /usr/bin/time -f "%M" -o "$work/$3.rss" "$BIN" run --brokers "$LAKESTREAM_TEST_BROKERS" --topic "$1" --group "$id-$3" \
  --lake "$2" --until-caught-up 2>"$work/$3.log"; }

echo "== produce: replays 0..$((REPEAT - 1)) (the grown lake) and replay $REPEAT (the probe)"
produce "$id-grow" --replays "$REPEAT"
produce "$id-probe" --replays 1 --first-replay "$REPEAT"

echo "== grow: replays 0..$((REPEAT - 1)) into $work/grown"
start=$(date +%s)
run "$id-grow" "$work/grown" grow
echo "grown in $(( $(date +%s) - start )) s; silver: $(find "$work/grown/silver/order_lines" -name '*.parquet' -not -path '*/_change_data/*' | wc -l) parquet files on disk"
if [ -n "${MAINTAIN:-}" ]; then
  echo "== maintain the grown lake (compaction, checkpoint; no vacuum)"
  "$BIN" maintain --lake "$work/grown" --no-vacuum 2>/dev/null
fi

echo "== probe: replay $REPEAT into an empty lake, then into the grown lake"
run "$id-probe" "$work/empty" empty
run "$id-probe" "$work/grown" grown

# Per-batch figures from the writer's JSON log: the silver MERGE (what it scanned and
# how long it took), each table's commit time, and rows in silver after the probe.
"$LAKESTREAM_PYTHON" - "$work" <<'EOF'
import json, statistics, sys
work = sys.argv[1]

def figures(name):
    merged, commits = [], {}
    for line in open(f"{work}/{name}.log"):
        try:
            f = json.loads(line)
        except ValueError:
            continue
        f = f.get("fields", f)
        if f.get("message") == "merged":
            merged.append(f)
        elif f.get("message") == "committed":
            commits.setdefault(f["table"], []).append(f["ms"])
    rss = int(open(f"{work}/{name}.rss").read().split()[-1]) // 1024
    return merged, commits, rss

def med(xs):
    return f"{statistics.median(xs):.0f}" if xs else "-"

rows = []
for name in ("empty", "grown"):
    merged, commits, rss = figures(name)
    rows.append((name, [
        ("batches", str(len(merged))),
        ("silver MERGE ms per batch, median (all)", f"{med([m['execution_ms'] for m in merged])} ({' '.join(str(m['execution_ms']) for m in merged)})"),
        ("silver commit ms per batch, median (MERGE + commit)", med(commits.get("silver.order_lines", []))),
        ("bronze commit ms per batch, median", med(commits.get("bronze.orders", []))),
        ("partitions touched per batch, median", med([m["partitions"] for m in merged])),
        ("silver files scanned per batch, median", med([m["files_scanned"] for m in merged])),
        ("silver rows copied per batch, median", med([m["rows_copied"] for m in merged])),
        ("peak RSS of the writer, MB", str(rss)),
    ]))
# The growing run, by tenth: how broad each batch was (months touched, files
# scanned) and what the MERGE and the rest of silver's commit cost.
merged, commits, rss = figures("grow")
silver = commits.get("silver.order_lines", [])
print(f"\ngrowing run ({len(merged)} batches, peak RSS {rss} MB), means by tenth of the run:")
for key, values in (("partitions touched", [m["partitions"] for m in merged]),
                    ("files scanned", [m["files_scanned"] for m in merged]),
                    ("MERGE ms", [m["execution_ms"] for m in merged]),
                    ("commit ms beyond the MERGE", [c - m["execution_ms"] for c, m in zip(silver, merged)])):
    n = len(values)
    tenths = [values[i * n // 10:(i + 1) * n // 10] for i in range(10)] if n >= 10 else [values]
    print(f"  {key:28} " + " ".join(f"{sum(t) / len(t):.0f}" for t in tenths if t))

width = max(len(k) for k, _ in rows[0][1])
print(f"\n{'':{width}}  {'into an empty lake':>24}  {'into the grown lake':>24}")
for (k, a), (_, b) in zip(rows[0][1], rows[1][1]):
    print(f"{k:{width}}  {a:>24}  {b:>24}")
EOF
