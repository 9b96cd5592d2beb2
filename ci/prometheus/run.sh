#!/usr/bin/env bash
# Start/stop a loopback-only Prometheus that scrapes the collector's Prometheus exporter.
#
#   bash ci/prometheus/run.sh start    # waits until ready, prints the pid on stdout
#   bash ci/prometheus/run.sh stop
#   bash ci/prometheus/run.sh status
#
# Config and TSDB live in the run dir (a fresh TSDB at each start). Scrapes every second with
# honor_labels, so the job/instance labels the exporter derives from service.name and
# service.instance.id are kept.
#
# Env: PROMETHEUS_BIN (default: what install.sh prints), PROMETHEUS_RUN_DIR (default
# ${TMPDIR:-/tmp}/tracing-progress-prometheus), PROMETHEUS_PORT (19090),
# COLLECTOR_PROM_PORT (18889: the scrape target), PROMETHEUS_START_TIMEOUT (60).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run_dir=${PROMETHEUS_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-prometheus}
pidfile=$run_dir/prometheus.pid
logfile=$run_dir/prometheus.log
port=${PROMETHEUS_PORT:-19090}
target=127.0.0.1:${COLLECTOR_PROM_PORT:-18889}
timeout=${PROMETHEUS_START_TIMEOUT:-60}

say() { echo "prometheus-run: $*" >&2; }
die() { echo "prometheus-run: ERROR: $*" >&2; exit 1; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ ! -r /proc/$1/stat || $(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1) != Z ]]
}
running_pid() {
  [[ -f $pidfile ]] || return 1
  local pid; pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$run_dir/prometheus.yml" || return 1
  echo "$pid"
}

cmd_start() {
  command -v curl >/dev/null || die "needs curl"
  if pid=$(running_pid); then die "already running (pid $pid); run '$0 stop' first"; fi
  if tcp_open "$port"; then die "port 127.0.0.1:$port is already in use"; fi
  local bin=${PROMETHEUS_BIN:-}
  if [[ -z $bin ]]; then bin=$(bash "$here/install.sh" | tail -n 1) || die "install failed"; fi
  [[ -x $bin ]] || die "prometheus binary not executable: '$bin'"
  mkdir -p "$run_dir"
  rm -rf "$run_dir/data"
  cat >"$run_dir/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: collector
    honor_labels: true
    static_configs:
      - targets: ["$target"]
YML
  : >"$logfile"
  nohup "$bin" --config.file="$run_dir/prometheus.yml" --storage.tsdb.path="$run_dir/data" \
    --web.listen-address="127.0.0.1:$port" --storage.tsdb.retention.time=1d \
    </dev/null >>"$logfile" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidfile"
  say "started $bin (pid $pid), log $logfile, scraping $target"
  local deadline=$(( SECONDS + timeout ))
  until [[ $(http_code "http://127.0.0.1:$port/-/ready") == 200 ]]; do
    if ! alive "$pid"; then
      rm -f "$pidfile"; say "exited during startup; log tail:"; tail -n 30 "$logfile" >&2; exit 1
    fi
    if (( SECONDS >= deadline )); then
      say "not ready after ${timeout}s"; tail -n 30 "$logfile" >&2; cmd_stop >/dev/null 2>&1 || true; exit 1
    fi
    sleep 0.25
  done
  say "ready: http://127.0.0.1:$port (API /api/v1/query)"
  echo "$pid"
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then rm -f "$pidfile"; say "not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for (( i = 0; i < 60; i++ )); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
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
