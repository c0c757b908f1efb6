#!/usr/bin/env bash
# What `npm start` and `npm test` need before they run, installed when missing (idempotent):
# Node.js 20.10 or later, the npm packages (npm ci when node_modules is missing or older than
# package-lock.json), a nats-server binary (scripts/ensure-nats-server.sh), and for `npm test`
# only (npm's `pretest`), Chromium for the browser tests (scripts/ensure-chromium.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "error: Node.js 20.10 or later is needed (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "  macOS: brew install node@22   Debian/Ubuntu: see https://nodejs.org/en/download" >&2
  exit 1
fi

if [ -L node_modules ]; then
  # A node_modules that links to another checkout's (a git worktree) is that checkout's to install:
  # `npm ci` here would empty it under everyone who shares it and leave a copy in its place.
  if [ ! -d node_modules/ ]; then
    echo "error: node_modules links to $(readlink node_modules), which does not exist; run npm ci there." >&2
    exit 1
  fi
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund
fi

# The browser tests drive /dashboard in Chromium: `npm test` installs it, `npm start` does not need it.
if [ "${npm_lifecycle_event:-}" = "pretest" ]; then
  bash scripts/ensure-chromium.sh >/dev/null
fi

exec bash scripts/ensure-nats-server.sh
