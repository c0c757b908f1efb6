#!/usr/bin/env bash
# Makes sure a Chromium (or Google Chrome) is installed for the browser tests
# (test/http/dashboard.browser.test.ts drives /dashboard with puppeteer-core). Idempotent: does
# nothing when one is found. Prints the browser's path as the last line on stdout; everything else
# goes to stderr. `npm start` never needs it: only the tests call this script.
#   - $CHROME_PATH, or a Chromium/Chrome at the usual places: nothing to do;
#   - Debian/Ubuntu (apt-get): apt-get update && apt-get install -y chromium (via sudo when not root);
#   - macOS: says what to install (Homebrew's chromium cask or Google Chrome) and exits 1;
#   - otherwise: says what to install and exits 1.
set -euo pipefail

find_browser() {
  local candidate
  for candidate in \
    "${CHROME_PATH:-}" \
    /usr/bin/chromium \
    /usr/bin/chromium-browser \
    /usr/bin/google-chrome \
    /usr/bin/google-chrome-stable \
    "/Applications/Chromium.app/Contents/MacOS/Chromium" \
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install_hint() {
  cat >&2 <<'HINT'
Install Chromium or Google Chrome, then run this again (or point CHROME_PATH at the browser). For example:
  Debian/Ubuntu:  sudo apt-get install chromium
  macOS:          brew install --cask chromium   (or install Google Chrome)
HINT
}

if find_browser; then
  exit 0
fi

if [ "$(uname -s)" = "Darwin" ]; then
  echo "error: no Chromium or Google Chrome found in /Applications; the browser tests need one." >&2
  install_hint
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no Chromium found, and this system has no apt-get to install it." >&2
  install_hint
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "error: installing chromium with apt-get needs root, and sudo is not available." >&2
  install_hint
  exit 1
fi

echo "chromium not found; installing it with apt-get (for the browser tests)" >&2
# stdout of apt-get goes to stderr: the last stdout line of this script is the browser's path.
$as_root apt-get update >&2
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >&2

if ! find_browser; then
  echo "error: the installation finished but no chromium binary was found at /usr/bin/chromium." >&2
  install_hint
  exit 1
fi
