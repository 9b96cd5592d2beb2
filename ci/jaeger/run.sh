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
svc_name=jaeger
svc_run_dir=${JAEGER_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-jaeger}
svc_match=jaeger/config.yaml
svc_timeout=${JAEGER_START_TIMEOUT:-60}

export JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-4317}
export JAEGER_OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-4318}
export JAEGER_QUERY_PORT=${JAEGER_QUERY_PORT:-16686}
export JAEGER_QUERY_GRPC_PORT=${JAEGER_QUERY_GRPC_PORT:-16685}
export JAEGER_HEALTH_PORT=${JAEGER_HEALTH_PORT:-13133}
svc_ports=("$JAEGER_OTLP_GRPC_PORT" "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_QUERY_PORT"
           "$JAEGER_QUERY_GRPC_PORT" "$JAEGER_HEALTH_PORT")

# shellcheck source=../lib/service.sh
source "$here/../lib/service.sh"

svc_ready() {
  [[ $(http_code "http://127.0.0.1:$JAEGER_QUERY_PORT/api/services") == 200 ]] || return 1
  [[ $(http_code "http://127.0.0.1:$JAEGER_HEALTH_PORT/status") == 200 ]] || return 1
  # OTLP/HTTP answers 404/405 on "/", anything but 000 means it is listening.
  [[ $(http_code "http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT/") != 000 ]] || return 1
  tcp_open "$JAEGER_OTLP_GRPC_PORT" || return 1
}

svc_command() {
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
  svc_cmd=("$bin" --config "$here/config.yaml")
}

svc_ready_message() {
  echo "OTLP grpc 127.0.0.1:$JAEGER_OTLP_GRPC_PORT http 127.0.0.1:$JAEGER_OTLP_HTTP_PORT," \
       "query http://127.0.0.1:$JAEGER_QUERY_PORT (grpc :$JAEGER_QUERY_GRPC_PORT)," \
       "health :$JAEGER_HEALTH_PORT; UI: ${JAEGER_UI_ASSETS_PATH:-placeholder page}"
}

svc_main "$@"
