#!/usr/bin/env bash
# Renders the HTML pages of `trace report --html` and `trace diff --html` in headless Chromium
# and writes PNG screenshots, to check that the self-contained pages (inline SVG, no scripts)
# render. Usage: scripts/check_html.sh [TRACE_BIN] [OUT_DIR]
# Installs Debian's chromium when missing (needs root and network once).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/debug/trace}"
out="${2:-$(mktemp -d)}"
fixture="$root/traces/analyze_fixture.parquet"
mkdir -p "$out"

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

"$bin" report "$fixture" --html "$out/report.html" >/dev/null
"$bin" diff "$fixture" "$fixture" --resamples 100 --html "$out/diff.html" >/dev/null

for page in report diff; do
    profile="$(mktemp -d)"
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
        --window-size=1400,2400 --screenshot="$out/$page.png" "file://$out/$page.html" \
        >/dev/null 2>&1
    rm -rf "$profile"
    # A blank page compresses to a few KB; charts with text and lines are far larger.
    size=$(stat -c %s "$out/$page.png")
    if [ "$size" -lt 20000 ]; then
        echo "check_html: $out/$page.png is only $size bytes: the page did not render" >&2
        exit 1
    fi
    echo "check_html: $page.html rendered to $out/$page.png ($size bytes)"
done
