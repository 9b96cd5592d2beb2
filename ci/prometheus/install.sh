#!/usr/bin/env bash
# Install Prometheus from Debian (2.42; idempotent) and print the binary's path last.
# 2.42 has no OTLP receiver: it scrapes the collector's Prometheus exporter (ci/prometheus/run.sh).
# The package's own service is not used; run.sh starts the binary with its own config.
set -euo pipefail
bin=/usr/bin/prometheus
if [[ ! -x $bin ]]; then
  echo "prometheus-install: apt-get install prometheus" >&2
  apt-get update -qq
  # policy-rc.d: the package must not start its service (we run our own instance).
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
"$bin" --version 2>&1 | head -n 1 >&2
echo "$bin"
