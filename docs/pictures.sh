#!/usr/bin/env bash
# Regenerates the README's pictures in docs/ from what the tests and the examples show.
#
#   bash docs/pictures.sh
#
# Run it after `bash .ci/run` (or `cargo test --all-features` with Jaeger and the UI running),
# which leaves the browser tests' screenshots in the target dir:
#
#   docs/live-page.png      <- target/browser/running.png     (tests/browser.rs: the live page)
#   docs/jaeger-trace.png   <- target/jaeger-ui/trace.png     (tests/jaeger_ui.rs: the run in Jaeger)
#   docs/jaeger-error.png   <- target/jaeger-ui/failed-span.png (the failed block's tags and logs)
#   docs/terminal.png       <- the setlist example's live view in tmux, captured with its colours
#                              mid-run and drawn by Chromium (tests/browser/terminal-picture.mjs)
#
# Needs tmux, node with `npm ci` done in tests/browser, and Chromium, as the tests do. PNGs are
# squeezed with pngquant or optipng when one is installed (apt-get install pngquant).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
out=docs

copy() {
  local from=$1 to=$2
  [[ -f $from ]] || { echo "pictures: missing $from (run the tests first)" >&2; exit 1; }
  cp "$from" "$to"
}
copy "$target/browser/running.png" "$out/live-page.png"
copy "$target/jaeger-ui/trace.png" "$out/jaeger-trace.png"
copy "$target/jaeger-ui/failed-span.png" "$out/jaeger-error.png"

# The terminal view: the setlist example (feature `terminal`) in a 112x44 tmux pane.
example=$target/debug/examples/setlist
[[ -x $example ]] || cargo build --quiet --features full --example setlist
session=tp-picture-$$
tmux new-session -d -s "$session" -x 112 -y 44 \
  "SETLIST_SPEED=0.4 RUST_LOG=warn $example; sleep 30"
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT
capture=$(mktemp)
# Wait until the third song is under way, with the second one's failure logged above the view.
for _ in $(seq 1 200); do
  sleep 0.1
  screen=$(tmux capture-pane -p -t "$session")
  if grep -q 'song failed, continuing' <<<"$screen" && grep -q 'audio3.wav (ID: [0-9]*) - Running' <<<"$screen"; then
    break
  fi
done
# The view is redrawn in place: take the fullest of a few captures (not one mid-redraw).
best=0
for _ in $(seq 1 15); do
  sleep 0.1
  tmux capture-pane -p -e -t "$session" >"$capture.try"
  if grep -q 'audio3.wav (ID: [0-9]*) - Running' "$capture.try"; then
    n=$(grep -c . "$capture.try" || true)
    if (( n > best )); then best=$n; cp "$capture.try" "$capture"; fi
  fi
done
rm -f "$capture.try"
[[ -s $capture ]] || { echo "pictures: the live view was never captured mid-run" >&2; exit 1; }
node tests/browser/terminal-picture.mjs "$capture" "$out/terminal.png" \
  "cargo run --features full --example setlist"
rm -f "$capture"

for png in "$out"/live-page.png "$out"/jaeger-trace.png "$out"/jaeger-error.png "$out"/terminal.png; do
  if command -v pngquant >/dev/null 2>&1; then
    pngquant --force --skip-if-larger --quality 70-95 --output "$png" "$png" || true
  elif command -v optipng >/dev/null 2>&1; then
    optipng -quiet -o2 "$png" || true
  fi
  echo "pictures: $png $(du -k "$png" | cut -f1) KiB"
done
