#!/usr/bin/env bash
# Benchmark: A/B of lakestream binaries on tests/bench/pipeline.sh, alternating run by run,
# the broker restarted before each round (nisshi keeps every topic in memory, and a
# full broker makes later runs slower). One line per run: binary, load, events/s (writer
# span), peak RSS, CPU, ratio to the bare consumer.
#   bash tests/bench/ab.sh /path/to/lakestream.a /path/to/lakestream.b
#   ROUNDS=5 bash tests/bench/ab.sh a b
set -euo pipefail
source "$(dirname "$0")/common.sh"
ROUNDS="${ROUNDS:-3}"
[ "$#" -ge 1 ] || { echo "usage: $0 BINARY [BINARY ...]" >&2; exit 2; }
BIN="$1" bench_start kafka # builds bare_consume unless BARE is set
for round in $(seq 1 "$ROUNDS"); do
  tests/stack/stack.sh stop kafka >/dev/null
  tests/stack/stack.sh start kafka >/dev/null
  for bin in "$@"; do
    out=$(BIN="$bin" BARE="$BARE" bash tests/bench/pipeline.sh 2>&1)
    field() { echo "$out" | grep -E "$1" | sed -E "s/$2//"; }
    echo "$(date -u +%H:%M:%S) round $round $(basename "$bin") load $(cut -d' ' -f1 /proc/loadavg) |" \
      "$(field '^writer span' '.*: ') | peak $(field '^peak RSS' ' *peak RSS: *') |" \
      "$(field '^CPU:' 'CPU: *') | ratio to bare $(field '^writer / bare' '.*: *')"
  done
done
