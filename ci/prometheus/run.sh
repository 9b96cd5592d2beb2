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
svc_name=prometheus
svc_run_dir=${PROMETHEUS_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-prometheus}
svc_match=$svc_run_dir/prometheus.yml
svc_timeout=${PROMETHEUS_START_TIMEOUT:-60}
port=${PROMETHEUS_PORT:-19090}
target=127.0.0.1:${COLLECTOR_PROM_PORT:-18889}
svc_ports=("$port")

# shellcheck source=../lib/service.sh
source "$here/../lib/service.sh"

svc_ready() { [[ $(http_code "http://127.0.0.1:$port/-/ready") == 200 ]]; }

svc_command() {
  command -v curl >/dev/null || die "needs curl"
  local bin=${PROMETHEUS_BIN:-}
  if [[ -z $bin ]]; then bin=$(bash "$here/install.sh" | tail -n 1) || die "install failed"; fi
  [[ -x $bin ]] || die "prometheus binary not executable: '$bin'"
  mkdir -p "$svc_run_dir"
  rm -rf "$svc_run_dir/data"
  cat >"$svc_run_dir/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: collector
    honor_labels: true
    static_configs:
      - targets: ["$target"]
YML
  svc_cmd=("$bin" --config.file="$svc_run_dir/prometheus.yml" --storage.tsdb.path="$svc_run_dir/data"
           --web.listen-address="127.0.0.1:$port" --storage.tsdb.retention.time=1d)
}

svc_ready_message() { echo "http://127.0.0.1:$port (API /api/v1/query), scraping $target"; }

svc_main "$@"
