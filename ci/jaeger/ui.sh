#!/usr/bin/env bash
# Get the Jaeger UI production build for the go-built Jaeger (idempotent).
#
#   bash ci/jaeger/ui.sh      -> last line of stdout: absolute path of the UI assets folder
#                                (a directory with index.html and static/)
#
# The go-built Jaeger serves a placeholder page instead of the UI (the UI is embedded only by
# upstream's release build). The crates.io crate `otlp-embedded` 0.0.2 (Apache-2.0) ships the
# production build of Jaeger UI 2.14.1 in its `jaeger-ui/build` folder. We get that crate with
# cargo, from the registry only: a scratch manifest depending on `otlp-embedded = "=0.0.2"`
# (kept outside the repository), then `cargo fetch` and `cargo metadata` to find the unpacked
# package. Nothing is built (the crate itself would need protoc) and nothing else is downloaded.
# Point Jaeger at the folder with JAEGER_UI_ASSETS_PATH (ci/jaeger/config.yaml passes it to
# `jaeger_query.ui.assets_path`; ci/jaeger/run.sh does this by itself).
#
# Pinned: UI 2.14.1 calls only the legacy /api/* routes, which Jaeger 2.13 (our pinned module
# v1.76.0) serves; UI 2.15+ needs /api/v3 routes for service and operation discovery.
#
# Env: JAEGER_CACHE (cache root, as install.sh), CARGO (the cargo command, default `cargo`).
set -euo pipefail

UI_CRATE=otlp-embedded
UI_CRATE_VERSION=0.0.2   # ships Jaeger UI 2.14.1
UI_VERSION=2.14.1

cache_root=${JAEGER_CACHE:-$HOME/.cache/tracing-progress/jaeger}
scratch=$cache_root/ui-$UI_CRATE-$UI_CRATE_VERSION
known=$scratch/assets-path
CARGO=${CARGO:-cargo}

say() { echo "jaeger-ui: $*" >&2; }
die() { echo "jaeger-ui: ERROR: $*" >&2; exit 1; }

# A folder is the UI when it has the index.html that Jaeger's query service rewrites.
valid() {
  [[ -f $1/index.html && -d $1/static ]] && grep -q 'JAEGER_CONFIG = DEFAULT_CONFIG' "$1/index.html"
}

if [[ -f $known ]]; then
  dir=$(cat "$known")
  if valid "$dir"; then
    say "up to date (Jaeger UI $UI_VERSION from $UI_CRATE $UI_CRATE_VERSION)"
    echo "$dir"
    exit 0
  fi
fi

command -v "$CARGO" >/dev/null 2>&1 || die "no '$CARGO' command (set CARGO=/path/to/cargo)"
mkdir -p "$scratch"
cat >"$scratch/Cargo.toml" <<EOF
# Scratch manifest of ci/jaeger/ui.sh: only fetched, never built.
[package]
name = "jaeger-ui-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
$UI_CRATE = "=$UI_CRATE_VERSION"

[workspace]
EOF
: >"$scratch/lib.rs"

start=$(date +%s)
say "fetching $UI_CRATE $UI_CRATE_VERSION (Jaeger UI $UI_VERSION) from crates.io with cargo"
# The target dir is never used (nothing is built); keep a shared one from being locked.
export CARGO_TARGET_DIR=$scratch/target
# Only this platform's dependencies (no windows-* crates): fewer downloads.
host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p') || true
platform=()
[[ -n $host ]] && platform=(--target "$host")
"$CARGO" fetch --quiet --manifest-path "$scratch/Cargo.toml" "${platform[@]}" >&2 \
  || die "cargo fetch failed"
[[ -n $host ]] && platform=(--filter-platform "$host")
meta=$("$CARGO" metadata --format-version 1 --manifest-path "$scratch/Cargo.toml" "${platform[@]}" 2>/dev/null) \
  || die "cargo metadata failed"
manifest=$(grep -o "\"manifest_path\":\"[^\"]*/$UI_CRATE-$UI_CRATE_VERSION/Cargo.toml\"" <<<"$meta" \
  | head -n 1 | sed 's/^"manifest_path":"//; s/"$//') || true
[[ -n $manifest ]] || die "cargo metadata does not list $UI_CRATE $UI_CRATE_VERSION"
dir=$(dirname "$manifest")/jaeger-ui/build
valid "$dir" || die "$dir is not a Jaeger UI build (no index.html with the JAEGER_CONFIG placeholder)"
echo "$dir" >"$known"
say "ready in $(( $(date +%s) - start ))s: $(du -sh "$dir" | cut -f1) in $dir"
echo "$dir"
