#!/usr/bin/env bash
# Renders the README's picture: runs the demo drill a few times (so the report
# has a trend), writes its HTML report, and screenshots it with headless
# Chromium (Debian's package: apt-get install chromium).
#   scripts/report-screenshot.sh [OUT.png]      (default: docs/report.png)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/report.png}
cargo build --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in 1 2 3; do
  target/debug/phoenix --state "$work/state" run plans/demo.toml --drill -q
done
target/debug/phoenix --state "$work/state" report --format html -o "$work/report.html" -q
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/chrome" --window-size=1100,1000 --hide-scrollbars \
  --screenshot="$out" "file://$work/report.html" 2>/dev/null
echo "wrote $out"
