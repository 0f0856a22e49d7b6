#!/bin/sh
# Debian's Chromium for the browser tests (tests/browser/), installed only when missing.
# Playwright's own browser download is not used: the tests drive /usr/bin/chromium.
# Without root and without sudo it does nothing; the browser tests then skip with the reason.
set -eu
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure_chromium: $CHROMIUM is missing and installing it needs root (or sudo); the browser tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no apt-get here; install Chromium at $CHROMIUM to run the browser tests" >&2
    exit 0
fi
echo "ensure_chromium: installing Debian's chromium package (for the browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || echo "ensure_chromium: apt-get could not install chromium; the browser tests will skip" >&2
