# Sourced by the benchmarks in tests/bench: where the caches are, the release build,
# and the local services they need.
#   bench_start kafka [azurite ...]   builds lakestream (unless BIN is set), starts the
#                                     services, and exports the stack's endpoints.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export LAKESTREAM_CACHE="${LAKESTREAM_CACHE:-$HOME/.cache/lakestream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAKESTREAM_CACHE/target}"
INPUT="${INPUT:-../shared/data/sales-transaction-v4a.csv.gz}"
PARTITIONS="${PARTITIONS:-6}"

bench_start() {
  if [ -z "${BIN:-}" ]; then
    cargo build --release --locked --quiet
    BIN="$CARGO_TARGET_DIR/release/lakestream"
  fi
  if [ -z "${BARE:-}" ]; then
    cargo build --release --locked --quiet --example bare_consume
    BARE="$CARGO_TARGET_DIR/release/examples/bare_consume"
  fi
  tests/stack/stack.sh start "$@" >/dev/null
  eval "$(tests/stack/stack.sh env)"
}
