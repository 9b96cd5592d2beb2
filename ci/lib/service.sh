# Shared start/stop/status for the loopback services CI runs (Jaeger, the collector role,
# Prometheus). Source it after setting, in the service's run.sh:
#
#   svc_name     short name for messages ("jaeger")
#   svc_run_dir  pid/log dir; the pid file and log are $svc_run_dir/$svc_name.{pid,log}
#   svc_match    text the process's command line must contain (guards against pid reuse)
#   svc_ports    ports that must be free before start
#   svc_timeout  seconds to wait for readiness
#
# and defining `svc_ready` (exit 0 when the service answers), `svc_command` (prints nothing;
# sets the array `svc_cmd` to the command to run) and optionally `svc_ready_message`.
# Then `svc_main "$@"` handles start|stop|status.

svc_pidfile=$svc_run_dir/$svc_name.pid
svc_logfile=$svc_run_dir/$svc_name.log

say() { echo "$svc_name-run: $*" >&2; }
die() { echo "$svc_name-run: ERROR: $*" >&2; exit 1; }

# http_code URL -> the HTTP status code, or 000 if nothing answered.
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

# The pid in the pid file, only if that process's command line contains $svc_match.
running_pid() {
  [[ -f $svc_pidfile ]] || return 1
  local pid; pid=$(cat "$svc_pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$svc_match" || return 1
  fi
  echo "$pid"
}

svc_start() {
  local pid p
  if pid=$(running_pid); then
    die "already running (pid $pid, pid file $svc_pidfile); run '$0 stop' first"
  fi
  for p in "${svc_ports[@]}"; do
    if tcp_open "$p"; then die "port 127.0.0.1:$p is already in use by another process"; fi
  done
  svc_command
  mkdir -p "$svc_run_dir"
  : >"$svc_logfile"
  nohup "${svc_cmd[@]}" </dev/null >>"$svc_logfile" 2>&1 &
  pid=$!
  echo "$pid" >"$svc_pidfile"
  say "started ${svc_cmd[0]} (pid $pid), log $svc_logfile; waiting up to ${svc_timeout}s"
  local deadline=$(( SECONDS + svc_timeout ))
  until svc_ready; do
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      rm -f "$svc_pidfile"
      say "exited during startup; last lines of $svc_logfile:"
      tail -n 30 "$svc_logfile" >&2
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      say "not ready after ${svc_timeout}s; last lines of $svc_logfile:"
      tail -n 30 "$svc_logfile" >&2
      svc_stop >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.25
  done
  if declare -F svc_ready_message >/dev/null; then say "ready: $(svc_ready_message)"; fi
  echo "$pid"
}

svc_stop() {
  local pid i
  if ! pid=$(running_pid); then
    rm -f "$svc_pidfile"
    say "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < 60; i++ )); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then
    say "pid $pid did not exit after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for (( i = 0; i < 20; i++ )); do alive "$pid" || break; sleep 0.25; done
  fi
  # Reaped here if this shell started it; otherwise by its parent or init.
  wait "$pid" 2>/dev/null || true
  rm -f "$svc_pidfile"
  say "stopped (pid $pid)"
}

svc_main() {
  case "${1:-}" in
    start) svc_start ;;
    stop) svc_stop ;;
    status) local pid; if pid=$(running_pid); then echo "$pid"; else say "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
  esac
}
