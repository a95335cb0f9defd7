#!/usr/bin/env bash
# lakestream reliability harness (issue 7). See tests/chaos/README.md.
#
#   tests/chaos/run.sh                 short form (CI): >= 20 SIGKILLs, >= 100 faults, a few minutes
#   tests/chaos/run.sh --long          long form: >= 300 SIGKILLs, >= 1000 faults, ~45 min
#   tests/chaos/run.sh --short --seed 42 --store s3 --kills 30 --seconds 200 --rows 40000
#   LAKESTREAM_CHAOS=long tests/chaos/run.sh   same as --long
#
# Needs: the lakestream binary (LAKESTREAM_BIN, default the release build in
# ~/.cache/lakestream/target, built here if missing), the tools of tests/stack/stack.sh
# (nisshi, Azurite, the venv with DuckDB), and confluent-kafka in that venv (installed
# here, pinned). --store s3 also needs the stack's SeaweedFS running.
# Exit status: 0 when every check passes and the bars are met, 1 otherwise, 2 on bad usage.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${LAKESTREAM_CACHE:-$HOME/.cache/lakestream}
CONFLUENT_KAFKA_VERSION=2.6.1 # bundles librdkafka 2.6.1 (nisshi needs >= 2.3)

mode=${LAKESTREAM_CHAOS:-short}
args=()
while (($#)); do
  case $1 in
    --short) mode=short ;;
    --long) mode=long ;;
    --seed | --kills | --seconds | --faults | --rows | --store | --workdir | --fault-rate)
      (($# >= 2)) || { echo "run.sh: $1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift ;;
    --keep) args+=("$1") ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $mode in short | long) ;; *) echo "run.sh: LAKESTREAM_CHAOS must be short or long" >&2; exit 2 ;; esac

log() { printf '[chaos] %s\n' "$*" >&2; }

# The tools (nisshi, Azurite, venv with DuckDB) as the stack installs them; no service of
# the shared stack is needed for --store azurite (the harness starts its own instances).
"$REPO/tests/stack/stack.sh" install kafka azurite python
eval "$("$REPO/tests/stack/stack.sh" env)"
PY=$LAKESTREAM_PYTHON

if [[ $("$PY" -c 'import confluent_kafka; print(confluent_kafka.version()[0])' 2>/dev/null) != "$CONFLUENT_KAFKA_VERSION" ]]; then
  log "installing confluent-kafka==$CONFLUENT_KAFKA_VERSION into $($PY -c 'import sys; print(sys.prefix)')"
  mkdir -p "$CACHE/locks"
  (
    flock 8
    "$PY" -m pip install --disable-pip-version-check --no-input -q "confluent-kafka==$CONFLUENT_KAFKA_VERSION" </dev/null >&2
  ) 8>"$CACHE/locks/venv-confluent.lock"
fi

BIN=${LAKESTREAM_BIN:-$CACHE/target/release/lakestream}
if [[ ! -x $BIN ]]; then
  log "no lakestream binary at $BIN: building it (release)"
  (cd "$REPO" && CARGO_TARGET_DIR=$CACHE/target cargo build --release --locked >&2)
fi

PYTHONDONTWRITEBYTECODE=1 exec "$PY" "$HERE/harness.py" --mode "$mode" --binary "$BIN" "${args[@]}"
