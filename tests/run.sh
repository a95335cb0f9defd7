#!/usr/bin/env bash
# The test command (README, CI): installs and starts the local stack (Kafka-protocol
# broker, Azurite, SeaweedFS, DuckDB reader), runs every test against it, and stops
# the services it started, then the static checks of docker/ (docker/validate.sh:
# Kubernetes schemas, checkov, alert rules) and the short form of the reliability
# harness (tests/chaos/run.sh: SIGKILLs, storage faults, broker and store restarts,
# hostile input; a few minutes). Extra arguments go to `cargo test` (e.g. a test name) and
# skip the harness; LAKESTREAM_CHAOS=skip skips it too, LAKESTREAM_CHAOS=long runs
# the long form instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export LAKESTREAM_CACHE="${LAKESTREAM_CACHE:-$HOME/.cache/lakestream}"
# Build outside the clone so that repeated runs (and CI) reuse the heavy dependency build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKESTREAM_CACHE/target}"

# Compile the tests while the stack installs and starts: on a new machine the broker
# (nisshi, built from crates.io) and lakestream's dependency tree each take tens of
# minutes, and side by side they overlap their downloads and single-threaded phases.
cargo test --release --locked --no-run "$@" &
build=$!
started_here=no
cleanup() {
  kill "$build" 2>/dev/null || true
  if [ "$started_here" = yes ]; then tests/stack/stack.sh stop; fi
}
trap cleanup EXIT
if ! tests/stack/stack.sh status >/dev/null 2>&1; then
  started_here=yes
fi
tests/stack/stack.sh start
eval "$(tests/stack/stack.sh env)"
wait "$build"

cargo test --release --locked "$@"

if [ "$#" -eq 0 ]; then
  # Static checks of the deployment files: Kubernetes schemas, checkov, rules (docker/README.md).
  docker/validate.sh
fi

if [ "$#" -eq 0 ] && [ "${LAKESTREAM_CHAOS:-short}" != skip ]; then
  LAKESTREAM_BIN="$CARGO_TARGET_DIR/release/lakestream" tests/chaos/run.sh
fi
