#!/usr/bin/env bash
# Install the Debian packages two tests need, where they are missing:
# - headless Chromium and its WebDriver (chromium, chromium-driver) for the browser test of
#   `incasem view` (tests/view/test_browser.py);
# - Xvfb and Mesa's software OpenGL, with the X libraries Qt's xcb platform loads, for the
#   napari plugin's Qt smoke test (tests/napari/test_qt_smoke.py): napari's canvas needs
#   OpenGL, which Qt's offscreen platform does not give it.
#
# Idempotent: does nothing when the programs are on PATH already. Installs with apt-get as
# root, or through `sudo -n` where that works without a password; runs `apt-get update` only
# when the install fails without it. When it cannot install, it says in one line which test
# will be skipped and exits 0: the rest of the test suite needs neither.
set -u

BROWSER=(chromium chromium-driver)
DISPLAY_PACKAGES=(xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libdbus-1-3 libfontconfig1)

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
have_display() { command -v Xvfb >/dev/null 2>&1 && /sbin/ldconfig -p 2>/dev/null | grep -q 'libxcb-cursor\.so\.0' \
    && [ -n "$(find /usr/lib -name 'swrast_dri.so' -print -quit 2>/dev/null)" ]; }

wanted=()
have_browser || wanted+=("${BROWSER[@]}")
have_display || wanted+=("${DISPLAY_PACKAGES[@]}")
[ ${#wanted[@]} -eq 0 ] && exit 0

skip() {
    echo "install_test_tools.sh: $1; the browser test of incasem view and the napari Qt smoke test may be skipped"
    exit 0
}

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    skip "cannot install ${wanted[*]} (not root, no password-less sudo)"
fi
command -v apt-get >/dev/null 2>&1 || skip "no apt-get to install ${wanted[*]} with"

install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${wanted[@]}" >/dev/null 2>&1
}

if ! install; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
        || skip "apt-get update failed"
    install || skip "apt-get install ${wanted[*]} failed"
fi
echo "install_test_tools.sh: installed ${wanted[*]}"
