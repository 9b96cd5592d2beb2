#!/usr/bin/env bash
# Start/stop a loopback-only Jaeger v2 (memory storage) for the end-to-end OTLP test.
#
#   bash ci/jaeger/run.sh start    # builds/locates the binary, starts it, waits until ready,
#                                  # prints the pid on stdout
#   bash ci/jaeger/run.sh stop     # stops it (SIGTERM, then SIGKILL after 15 s) and waits
#   bash ci/jaeger/run.sh status   # exit 0 and print the pid if running
#
# Env:
#   JAEGER_BIN          binary to run (default: whatever ci/jaeger/install.sh prints)
#   JAEGER_UI_ASSETS_PATH  Jaeger UI build to serve (default: whatever ci/jaeger/ui.sh prints;
#                       set it empty to serve the go-built binary's placeholder page)
#   JAEGER_RUN_DIR      pid/log dir (default: ${TMPDIR:-/tmp}/tracing-progress-jaeger)
#   JAEGER_START_TIMEOUT seconds to wait for readiness (default 60)
#   JAEGER_OTLP_GRPC_PORT, JAEGER_OTLP_HTTP_PORT, JAEGER_QUERY_PORT, JAEGER_QUERY_GRPC_PORT,
#   JAEGER_HEALTH_PORT  ports (defaults 4317 4318 16686 16685 13133), all on 127.0.0.1;
#                       they are read by config.yaml, so export them before start.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run_dir=${JAEGER_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-jaeger}
pidfile=$run_dir/jaeger.pid
logfile=$run_dir/jaeger.log
config=$here/config.yaml
timeout=${JAEGER_START_TIMEOUT:-60}

export JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-4317}
export JAEGER_OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-4318}
export JAEGER_QUERY_PORT=${JAEGER_QUERY_PORT:-16686}
export JAEGER_QUERY_GRPC_PORT=${JAEGER_QUERY_GRPC_PORT:-16685}
export JAEGER_HEALTH_PORT=${JAEGER_HEALTH_PORT:-13133}

say() { echo "jaeger-run: $*" >&2; }
die() { echo "jaeger-run: ERROR: $*" >&2; exit 1; }

# http_code URL -> prints the HTTP status code, or 000 if nothing answered.
if command -v curl >/dev/null 2>&1; then
  http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
elif command -v python3 >/dev/null 2>&1; then
  http_code() {
    python3 - "$1" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
  }
else
  die "need curl or python3"
fi

# tcp_open PORT -> success if something accepts TCP connections on 127.0.0.1:PORT.
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PID -> the process exists and is not a zombie.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r /proc/$1/stat ]]; then
    local st; st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [[ $st != Z ]] || return 1
  fi
}

# Only trust a pid file whose process is really a jaeger binary (guards against pid reuse).
running_pid() {
  [[ -f $pidfile ]] || return 1
  local pid; pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'jaeger' || return 1
  fi
  echo "$pid"
}

ready() {
  [[ $(http_code "http://127.0.0.1:$JAEGER_QUERY_PORT/api/services") == 200 ]] || return 1
  [[ $(http_code "http://127.0.0.1:$JAEGER_HEALTH_PORT/status") == 200 ]] || return 1
  # OTLP/HTTP answers 404/405 on "/", anything but 000 means it is listening.
  [[ $(http_code "http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT/") != 000 ]] || return 1
  tcp_open "$JAEGER_OTLP_GRPC_PORT" || return 1
}

cmd_start() {
  if pid=$(running_pid); then
    die "already running (pid $pid, pid file $pidfile); run '$0 stop' first"
  fi
  for p in "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_QUERY_PORT" \
           "$JAEGER_QUERY_GRPC_PORT" "$JAEGER_HEALTH_PORT"; do
    if tcp_open "$p"; then die "port 127.0.0.1:$p is already in use by another process"; fi
  done

  local bin=${JAEGER_BIN:-}
  if [[ -z $bin ]]; then
    bin=$(bash "$here/install.sh" | tail -n 1) || die "install.sh failed"
  fi
  [[ -x $bin ]] || die "jaeger binary not found or not executable: '$bin'"

  # The real UI instead of the placeholder page (config.yaml reads JAEGER_UI_ASSETS_PATH).
  if [[ -z ${JAEGER_UI_ASSETS_PATH+set} ]]; then
    if ui=$(bash "$here/ui.sh" | tail -n 1) && [[ -n $ui ]]; then
      export JAEGER_UI_ASSETS_PATH=$ui
    else
      say "WARNING: no Jaeger UI (ui.sh failed); serving the placeholder page, the API works"
      export JAEGER_UI_ASSETS_PATH=
    fi
  fi
  if [[ -n $JAEGER_UI_ASSETS_PATH && ! -f $JAEGER_UI_ASSETS_PATH/index.html ]]; then
    die "JAEGER_UI_ASSETS_PATH=$JAEGER_UI_ASSETS_PATH has no index.html"
  fi

  mkdir -p "$run_dir"
  : >"$logfile"
  nohup "$bin" --config "$config" </dev/null >>"$logfile" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidfile"
  say "started $bin (pid $pid), log $logfile; waiting up to ${timeout}s for readiness"

  local deadline=$(( SECONDS + timeout ))
  until ready; do
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      rm -f "$pidfile"
      say "jaeger exited during startup; last lines of $logfile:"
      tail -n 30 "$logfile" >&2
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      say "not ready after ${timeout}s; last lines of $logfile:"
      tail -n 30 "$logfile" >&2
      cmd_stop >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.25
  done
  say "ready: OTLP grpc 127.0.0.1:$JAEGER_OTLP_GRPC_PORT http 127.0.0.1:$JAEGER_OTLP_HTTP_PORT," \
      "query http://127.0.0.1:$JAEGER_QUERY_PORT (grpc :$JAEGER_QUERY_GRPC_PORT), health :$JAEGER_HEALTH_PORT;" \
      "UI: ${JAEGER_UI_ASSETS_PATH:-placeholder page}"
  echo "$pid"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    say "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for (( i = 0; i < 60; i++ )); do
    alive "$pid" || break
    sleep 0.25
  done
  if alive "$pid"; then
    say "pid $pid did not exit after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for (( i = 0; i < 20; i++ )); do alive "$pid" || break; sleep 0.25; done
  fi
  # If we started it from this shell, reap it; otherwise it is reaped by its parent/init.
  wait "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  say "stopped (pid $pid)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status)
    if pid=$(running_pid); then echo "$pid"; else say "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
