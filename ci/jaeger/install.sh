#!/usr/bin/env bash
# Build the pinned Jaeger v2 binary from the Go module proxy (idempotent).
#
#   bash ci/jaeger/install.sh          -> last line of stdout: absolute path of the binary
#
# Pinned: module github.com/jaegertracing/jaeger v1.76.0 (= Jaeger v2.13.0), built through
# the wrapper module in ci/jaeger/tool (go.mod + go.sum pin every dependency).
# Output goes to ${JAEGER_CACHE:-$HOME/.cache/tracing-progress/jaeger}/<version>/jaeger,
# outside the repository. GOMODCACHE/GOCACHE keep their defaults, so a warm machine
# does not download or recompile. A stamp file (hash of go.mod, go.sum and build flags)
# decides whether an existing binary is still the right one.
#
# Env: JAEGER_CACHE (cache root), GO (path of the go command), JAEGER_FORCE_REBUILD=1.
set -euo pipefail

JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_MODULE_VERSION=v1.76.0   # must match ci/jaeger/tool/go.mod
JAEGER_APP_VERSION=v2.13.0      # the Jaeger v2 release made from the same commit
JAEGER_BUILD_DATE=2025-12-03T16:07:08Z  # tag time, as reported by the module proxy
JAEGER_PKG=$JAEGER_MODULE/cmd/jaeger

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tooldir=$here/tool
cache_root=${JAEGER_CACHE:-$HOME/.cache/tracing-progress/jaeger}
outdir=$cache_root/$JAEGER_MODULE_VERSION
bin=$outdir/jaeger
stamp=$outdir/jaeger.stamp
log=$outdir/build.log

say() { echo "jaeger-install: $*" >&2; }
die() { echo "jaeger-install: ERROR: $*" >&2; exit 1; }

# --- find go ----------------------------------------------------------------------
GO=${GO:-}
if [[ -z $GO ]]; then
  if command -v go >/dev/null 2>&1; then GO=$(command -v go)
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no 'go' command found (set GO=/path/to/go or put go on PATH); need Go >= 1.24.6"
  fi
fi
gover=$("$GO" env GOVERSION 2>/dev/null) || die "'$GO env GOVERSION' failed"

grep -q "^\s*$JAEGER_MODULE $JAEGER_MODULE_VERSION\b" "$tooldir/go.mod" \
  || die "$tooldir/go.mod does not require $JAEGER_MODULE $JAEGER_MODULE_VERSION; update install.sh and go.mod together"

ldflags="-s -w"
ldflags+=" -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_APP_VERSION"
ldflags+=" -X $JAEGER_MODULE/internal/version.date=$JAEGER_BUILD_DATE"
ldflags+=" -X $JAEGER_MODULE/internal/version.commitSHA=module-$JAEGER_MODULE_VERSION"
buildflags=(-trimpath -mod=readonly -ldflags "$ldflags")

# The stamp captures everything that determines the binary.
want_stamp=$( {
  echo "pkg=$JAEGER_PKG"; echo "go=$gover"; echo "flags=${buildflags[*]}"; echo "cgo=0"
  cat "$tooldir/go.mod" "$tooldir/go.sum"
} | sha256sum | cut -d' ' -f1)

if [[ ${JAEGER_FORCE_REBUILD:-0} != 1 && -x $bin && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
  say "up to date ($JAEGER_APP_VERSION, module $JAEGER_MODULE_VERSION, $gover)"
  echo "$bin"
  exit 0
fi

mkdir -p "$outdir"
# Serialise concurrent installs into the same cache dir when flock is available.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$outdir/.lock"
  flock 9
  if [[ ${JAEGER_FORCE_REBUILD:-0} != 1 && -x $bin && -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
    say "up to date (built by a concurrent install)"
    echo "$bin"
    exit 0
  fi
fi

tmp=$outdir/jaeger.tmp.$$
trap 'rm -f "$tmp"' EXIT
say "building $JAEGER_PKG@$JAEGER_MODULE_VERSION (Jaeger $JAEGER_APP_VERSION) with $gover, CGO_ENABLED=0"
say "a cold build (downloads ~1.3 GB of modules, ~1.6 GB GOCACHE) took ~6 min on 2 cores; log: $log"
start=$(date +%s)
{
  echo "# $(date -u +%FT%TZ) in $tooldir: CGO_ENABLED=0 $GO build $(printf '%q ' "${buildflags[@]}")-o $tmp $JAEGER_PKG"
  echo "# GOMODCACHE=$("$GO" env GOMODCACHE) GOCACHE=$("$GO" env GOCACHE) GOPROXY=$("$GO" env GOPROXY)"
} >"$log"
if ! (cd "$tooldir" && CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-}" \
        "$GO" build "${buildflags[@]}" -o "$tmp" "$JAEGER_PKG") >>"$log" 2>&1; then
  say "build FAILED after $(( $(date +%s) - start ))s; last lines of $log:"
  tail -n 30 "$log" >&2
  exit 1
fi
if ! { "$tmp" version && echo; } >>"$log" 2>&1; then
  say "built binary does not run ('jaeger version' failed); last lines of $log:"
  tail -n 30 "$log" >&2
  exit 1
fi
mv -f "$tmp" "$bin"
echo "$want_stamp" >"$stamp"
secs=$(( $(date +%s) - start ))
size=$(du -h "$bin" | cut -f1)
echo "# built in ${secs}s, size $size" >>"$log"
say "built in ${secs}s, size $size"
echo "$bin"
