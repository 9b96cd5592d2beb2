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
svc_name=collector
svc_run_dir=${COLLECTOR_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-collector}
svc_match=collector/config.yaml
svc_timeout=${COLLECTOR_START_TIMEOUT:-60}

export COLLECTOR_OTLP_GRPC_PORT=${COLLECTOR_OTLP_GRPC_PORT:-14317}
export COLLECTOR_OTLP_HTTP_PORT=${COLLECTOR_OTLP_HTTP_PORT:-14318}
export COLLECTOR_PROM_PORT=${COLLECTOR_PROM_PORT:-18889}
export COLLECTOR_HEALTH_PORT=${COLLECTOR_HEALTH_PORT:-13134}
export JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-4317}
svc_ports=("$COLLECTOR_OTLP_GRPC_PORT" "$COLLECTOR_OTLP_HTTP_PORT" "$COLLECTOR_PROM_PORT"
           "$COLLECTOR_HEALTH_PORT")

# shellcheck source=../lib/service.sh
source "$here/../lib/service.sh"

svc_ready() {
  [[ $(http_code "http://127.0.0.1:$COLLECTOR_HEALTH_PORT/status") == 200 ]] || return 1
  [[ $(http_code "http://127.0.0.1:$COLLECTOR_PROM_PORT/metrics") == 200 ]] || return 1
  tcp_open "$COLLECTOR_OTLP_HTTP_PORT" && tcp_open "$COLLECTOR_OTLP_GRPC_PORT"
}

svc_command() {
  local bin=${COLLECTOR_BIN:-${JAEGER_BIN:-}}
  if [[ -z $bin ]]; then bin=$(bash "$here/../jaeger/install.sh" | tail -n 1) || die "install failed"; fi
  [[ -x $bin ]] || die "collector binary not executable: '$bin'"
  svc_cmd=("$bin" --config "$here/config.yaml")
}

svc_ready_message() {
  echo "OTLP grpc :$COLLECTOR_OTLP_GRPC_PORT http :$COLLECTOR_OTLP_HTTP_PORT, prometheus" \
       "exporter http://127.0.0.1:$COLLECTOR_PROM_PORT/metrics, traces -> :$JAEGER_OTLP_GRPC_PORT"
}

svc_main "$@"
