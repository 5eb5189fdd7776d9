#!/usr/bin/env bash
# Headless Chromium + its WebDriver for the dashboard's browser test (tests/test_app_browser.py).
# Idempotent: does nothing when both are installed. Debian/Ubuntu only; elsewhere it says so and
# the browser test skips with the same reason.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_browser: no apt-get here; install chromium and chromedriver yourself" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
echo "install_browser: $(chromium --version 2>/dev/null | head -1)"
