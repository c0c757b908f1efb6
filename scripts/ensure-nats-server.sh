#!/usr/bin/env bash
# Makes sure a `nats-server` binary (2.9 or later) is available: the embedded NATS mode and the tests
# start one. Idempotent: does nothing when it is already installed.
#   - on PATH or at /usr/sbin/nats-server: nothing to do;
#   - Debian/Ubuntu (apt-get): apt-get update && apt-get install -y nats-server (via sudo when not root);
#   - macOS with Homebrew: brew install nats-server;
#   - otherwise: says what to install and exits 1.
set -euo pipefail

have_nats_server() {
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]
}

install_hint() {
  cat >&2 <<'HINT'
Install nats-server 2.9 or later, then run this again. For example:
  Debian/Ubuntu:  sudo apt-get install nats-server
  macOS:          brew install nats-server
  anywhere:       put a release binary from https://github.com/nats-io/nats-server/releases on PATH
HINT
}

if have_nats_server; then
  exit 0
fi

echo "nats-server not found; installing it" >&2

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=""
  elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
  else
    echo "error: installing nats-server with apt-get needs root, and sudo is not available." >&2
    install_hint
    exit 1
  fi
  $as_root apt-get update
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server
elif [ "$(uname -s)" = "Darwin" ] && command -v brew >/dev/null 2>&1; then
  brew install nats-server
else
  echo "error: nats-server is not installed, and this system has neither apt-get nor Homebrew." >&2
  install_hint
  exit 1
fi

if ! have_nats_server; then
  echo "error: the installation finished but no nats-server binary is on PATH or at /usr/sbin/nats-server." >&2
  install_hint
  exit 1
fi

echo "nats-server installed: $(command -v nats-server || echo /usr/sbin/nats-server)" >&2
