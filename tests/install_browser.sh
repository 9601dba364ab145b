#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages chromium, chromium-driver)
# for the browser test of `incasem view` (tests/view/test_browser.py).
#
# Idempotent: does nothing when `chromium` and `chromedriver` are on PATH already.
# Installs with apt-get as root, or through `sudo -n` where that works without a
# password; runs `apt-get update` only when the install fails without it. When it
# cannot install, it says in one line that the browser test will be skipped and
# exits 0: the rest of the test suite does not need a browser.
set -u

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

skip() {
    echo "install_browser.sh: $1; the browser test of incasem view will be skipped"
    exit 0
}

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    skip "cannot install chromium chromium-driver (not root, no password-less sudo)"
fi
command -v apt-get >/dev/null 2>&1 || skip "no apt-get to install chromium chromium-driver with"

install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1
}

if ! install; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
        || skip "apt-get update failed"
    install || skip "apt-get install chromium chromium-driver failed"
fi

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install_browser.sh: installed $(chromium --version 2>/dev/null | head -n 1)"
else
    skip "chromium or chromedriver is still not on PATH after installing"
fi
