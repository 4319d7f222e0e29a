#!/bin/sh
# Make sure Debian's chromium and chromium-driver are installed, for the labelling app's browser test.
# Installs them with apt-get when they are missing and apt-get is usable (root, or passwordless sudo);
# does nothing otherwise (the test then skips and says why). Never fails the caller.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; the browser test will be skipped." >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    run=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run="sudo -n"
else
    echo "ensure-chromium: apt-get needs root; the browser test will be skipped." >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! $run apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
    $run apt-get update >/dev/null 2>&1 || true
    $run apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
        || echo "ensure-chromium: apt-get could not install chromium; the browser test will be skipped." >&2
fi
exit 0
