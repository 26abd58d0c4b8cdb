# shellcheck shell=bash
# Helpers to install, start and stop a local Kafka-compatible broker (Tansu),
# and to check the Debian packages the build needs.
# Sourced by scripts/quickstart.sh, scripts/test.sh and the benchmark.
#
# The broker binary is built once with cargo and cached outside the clone, in
# $WEBHOOK_CONNECTOR_CACHE (default ~/.cache/webhook-connector), so later runs
# and other clones on the same machine start in a second.

TANSU_VERSION=0.6.0
CACHE_DIR="${WEBHOOK_CONNECTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/webhook-connector}"
TANSU_BIN="$CACHE_DIR/tansu-$TANSU_VERSION/bin/tansu"
BROKER_PID=""

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages the scripts need: the build (rdkafka with `ssl`, and the Tansu
# broker) needs gcc make pkg-config libssl-dev; the tests also nodejs and npm,
# the benchmark curl and wrk.
BUILD_PACKAGES=(gcc make pkg-config libssl-dev)

# True when the Debian package $1 (or what it provides) is present.
system_package_present() {
  case "$1" in
    gcc) command -v cc >/dev/null || command -v gcc >/dev/null ;;
    nodejs) command -v node >/dev/null ;;
    libssl-dev)
      { command -v pkg-config >/dev/null && pkg-config --exists openssl; } ||
        # shellcheck disable=SC2016 # ${Status} is dpkg-query's, not the shell's
        dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q 'ok installed' ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

# ensure_system_packages PKG...: checks the given Debian packages; installs the
# missing ones with apt-get when running as root, else names them and fails.
# Prints nothing when everything is present.
ensure_system_packages() {
  local pkg missing=()
  for pkg in "$@"; do
    system_package_present "$pkg" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "Installing missing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 ||
      { echo "error: apt-get install ${missing[*]} failed" >&2; return 1; }
    for pkg in "${missing[@]}"; do
      system_package_present "$pkg" ||
        { echo "error: $pkg is still missing after apt-get install" >&2; return 1; }
    done
    return 0
  fi
  echo "error: missing Debian packages: ${missing[*]}" >&2
  echo "  install them with: sudo apt-get install -y ${missing[*]}" >&2
  return 1
}

# install_once DIR CHECK LOCK MESSAGE COMMAND ARG...: unless DIR/CHECK exists,
# logs MESSAGE and runs COMMAND STAGING ARG..., which must install into the
# empty directory STAGING (DIR.partial) and leave STAGING/CHECK there; STAGING is
# then moved to DIR. One install at a time, even when two scripts start
# together: the lock file LOCK is held throughout. Fails when DIR/CHECK is
# missing after. The validators' npm tools (scripts/lib/validators.sh) install
# through it too.
install_once() {
  local dir="$1" check="$2" lock="$3" message="$4"
  shift 4
  mkdir -p "$CACHE_DIR"
  (
    flock 9
    if [ -e "$dir/$check" ]; then exit 0; fi
    log "$message"
    local staging="$dir.partial"
    rm -rf "$staging"
    mkdir -p "$staging"
    "$1" "$staging" "${@:2}" && [ -e "$staging/$check" ] || { rm -rf "$staging"; exit 1; }
    rm -rf "$dir"
    mv "$staging" "$dir"
  ) 9>"$lock"
  [ -e "$dir/$check" ]
}

# cargo_install_tansu STAGING: builds Tansu into STAGING/bin.
cargo_install_tansu() {
  # A build directory in the cache lets an interrupted install resume.
  CARGO_TARGET_DIR="$CACHE_DIR/tansu-build" cargo install tansu \
    --version "$TANSU_VERSION" --locked --features dynostore --root "$1" >&2 &&
    rm -rf "$CACHE_DIR/tansu-build"
}

# Installs Tansu into the cache unless it is there already; prints nothing.
ensure_broker_installed() {
  if [ -x "$TANSU_BIN" ]; then
    return 0
  fi
  install_once "$CACHE_DIR/tansu-$TANSU_VERSION" bin/tansu "$CACHE_DIR/install.lock" \
    "Installing the Tansu broker $TANSU_VERSION into $CACHE_DIR (once; about 8-10 minutes on 2 cores)" \
    cargo_install_tansu && [ -x "$TANSU_BIN" ] ||
    { echo "error: Tansu install failed" >&2; return 1; }
}

# True when nothing listens on 127.0.0.1:$1.
port_is_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints $1 when it is free, else a free port in 20000-59999.
pick_port() {
  local port="${1:-}"
  if [ -n "$port" ] && port_is_free "$port"; then
    echo "$port"
    return
  fi
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    if port_is_free "$port"; then
      echo "$port"
      return
    fi
  done
  echo "error: no free port found" >&2
  return 1
}

# start_broker PORT LOGFILE: starts Tansu on 127.0.0.1:PORT (in-memory storage)
# and waits until it accepts connections. Sets BROKER_PID.
start_broker() {
  local port="$1" logfile="$2"
  "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "memory://tansu/" >"$logfile" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      echo "error: the broker exited at start; its log ($logfile):" >&2
      cat "$logfile" >&2
      return 1
    fi
    if ! port_is_free "$port"; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: the broker did not listen on 127.0.0.1:$port within 10 s" >&2
  return 1
}

# Stops the broker started by start_broker, if any.
stop_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -CONT "$BROKER_PID" 2>/dev/null || true
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
}
