#!/bin/sh
# Regenerates the README's dashboard pictures (docs/dashboard.png, docs/status.png, docs/post.png)
# from the browser tests' small site (tests/support/dashboard_site.py), then shrinks them with pngquant.
# Needs Debian's chromium, a CJK font (fonts-wqy-zenhei) and pngquant; installs them when missing and root.
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure_chromium.sh
missing=""
command -v pngquant >/dev/null 2>&1 || missing="$missing pngquant"
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || missing="$missing fonts-wqy-zenhei"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
AGGREGATOR_DOCS_SCREENSHOTS=1 .venv/bin/pytest -q tests/test_dashboard_browser.py
if command -v pngquant >/dev/null 2>&1; then
    pngquant --force --skip-if-larger --strip --quality 60-90 --ext .png docs/dashboard.png docs/status.png docs/post.png
fi
ls -l docs/*.png
