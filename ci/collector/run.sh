#!/usr/bin/env bash
# Start/stop the OpenTelemetry Collector role for the fleet tests (loopback only).
#
#   bash ci/collector/run.sh start    # waits until ready, prints the pid on stdout
#   bash ci/collector/run.sh stop     # SIGTERM, SIGKILL after 15 s, waits
#   bash ci/collector/run.sh status   # exit 0 and print the pid if running
#
# The binary is the pinned Jaeger v2 (ci/jaeger/install.sh): Jaeger v2 is a Collector
# distribution that carries every component this needs (otlp receiver, batch processor,
# prometheus and otlp exporters), so no second Go build. config.yaml gives it the collector
# role: OTLP in, metrics out on a Prometheus exporter, traces forwarded to Jaeger over OTLP.
#
# Env: COLLECTOR_BIN (default: what ci/jaeger/install.sh prints), COLLECTOR_RUN_DIR
# (default ${TMPDIR:-/tmp}/tracing-progress-collector), COLLECTOR_START_TIMEOUT (60),
# COLLECTOR_OTLP_GRPC_PORT 14317, COLLECTOR_OTLP_HTTP_PORT 14318, COLLECTOR_PROM_PORT 18889,
# COLLECTOR_HEALTH_PORT 13134, JAEGER_OTLP_GRPC_PORT 4317 (where traces go).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run_dir=${COLLECTOR_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-collector}
pidfile=$run_dir/collector.pid
logfile=$run_dir/collector.log
timeout=${COLLECTOR_START_TIMEOUT:-60}

export COLLECTOR_OTLP_GRPC_PORT=${COLLECTOR_OTLP_GRPC_PORT:-14317}
export COLLECTOR_OTLP_HTTP_PORT=${COLLECTOR_OTLP_HTTP_PORT:-14318}
export COLLECTOR_PROM_PORT=${COLLECTOR_PROM_PORT:-18889}
export COLLECTOR_HEALTH_PORT=${COLLECTOR_HEALTH_PORT:-13134}
export JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-4317}

say() { echo "collector-run: $*" >&2; }
die() { echo "collector-run: ERROR: $*" >&2; exit 1; }

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ ! -r /proc/$1/stat || $(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1) != Z ]]
}
# Only a pid whose command line names our config (guards against pid reuse).
running_pid() {
  [[ -f $pidfile ]] || return 1
  local pid; pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'collector/config.yaml' || return 1
  echo "$pid"
}
ready() {
  [[ $(http_code "http://127.0.0.1:$COLLECTOR_HEALTH_PORT/status") == 200 ]] || return 1
  [[ $(http_code "http://127.0.0.1:$COLLECTOR_PROM_PORT/metrics") == 200 ]] || return 1
  tcp_open "$COLLECTOR_OTLP_HTTP_PORT" && tcp_open "$COLLECTOR_OTLP_GRPC_PORT"
}

cmd_start() {
  command -v curl >/dev/null || die "needs curl"
  if pid=$(running_pid); then die "already running (pid $pid); run '$0 stop' first"; fi
  for p in "$COLLECTOR_OTLP_GRPC_PORT" "$COLLECTOR_OTLP_HTTP_PORT" "$COLLECTOR_PROM_PORT" \
           "$COLLECTOR_HEALTH_PORT"; do
    if tcp_open "$p"; then die "port 127.0.0.1:$p is already in use"; fi
  done
  local bin=${COLLECTOR_BIN:-${JAEGER_BIN:-}}
  if [[ -z $bin ]]; then bin=$(bash "$here/../jaeger/install.sh" | tail -n 1) || die "install failed"; fi
  [[ -x $bin ]] || die "collector binary not executable: '$bin'"
  mkdir -p "$run_dir"
  : >"$logfile"
  nohup "$bin" --config "$here/config.yaml" </dev/null >>"$logfile" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidfile"
  say "started $bin (pid $pid), log $logfile"
  local deadline=$(( SECONDS + timeout ))
  until ready; do
    if ! alive "$pid"; then
      rm -f "$pidfile"; say "exited during startup; log tail:"; tail -n 30 "$logfile" >&2; exit 1
    fi
    if (( SECONDS >= deadline )); then
      say "not ready after ${timeout}s; log tail:"; tail -n 30 "$logfile" >&2
      cmd_stop >/dev/null 2>&1 || true; exit 1
    fi
    sleep 0.25
  done
  say "ready: OTLP grpc :$COLLECTOR_OTLP_GRPC_PORT http :$COLLECTOR_OTLP_HTTP_PORT," \
      "prometheus exporter http://127.0.0.1:$COLLECTOR_PROM_PORT/metrics, traces -> :$JAEGER_OTLP_GRPC_PORT"
  echo "$pid"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then rm -f "$pidfile"; say "not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for (( i = 0; i < 60; i++ )); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then say "no exit after SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  say "stopped (pid $pid)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) if pid=$(running_pid); then echo "$pid"; else say "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
