#!/usr/bin/env bash
# Builds Ringfort and runs it on the sample config (`scripts/run.sh` = serve; any other
# arguments go to the binary, e.g. `scripts/run.sh extension add 1000`). Installs the one
# system library the build links (libopus, found through pkg-config) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists opus 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "run.sh: installing libopus-dev and pkg-config (needed to build the Opus codec)"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends libopus-dev pkg-config
fi
if [ ! -d /usr/share/zoneinfo ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "run.sh: installing tzdata (the time zones of the dialplan's time sets)"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends tzdata
fi
if [ $# -eq 0 ]; then
  set -- serve
fi
exec cargo run --release -- "$@"
