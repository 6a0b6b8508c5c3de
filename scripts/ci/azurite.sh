#!/usr/bin/env bash
# Azurite, Microsoft's local Azure Blob Storage emulator, for tests/store.rs's `az://` test:
# installed from npm once per machine into a cache outside the clone (pinned version), and
# printed as a shell assignment:
#
#   eval "$(scripts/ci/azurite.sh)"     # sets TRACE_AZURITE to the azurite-blob binary
#
# Needs node and npm (the machine's packages: .ci/run installs them where missing).
set -euo pipefail
VERSION=3.35.0
cache=${TRACE_CACHE:-$HOME/.cache/trace-ci}/azurite-$VERSION
bin=$cache/node_modules/.bin/azurite-blob
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-audit --no-fund --silent "azurite@$VERSION" >&2
fi
echo "export TRACE_AZURITE=$bin"
