#!/usr/bin/env bash
# The container test (deploy/compose-test.sh): nodes from the offline image, started as the
# StatefulSet starts them, form a cluster with a seed and joiners. Needs a Docker engine
# (none can be installed from here: without one this check says so and skips); installs
# docker-compose from Debian if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"

if ! docker info >/dev/null 2>&1; then
  echo "compose: SKIPPED: no Docker engine reachable on this machine" >&2
  exit 0
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-compose >/dev/null
fi
cargo build --quiet --profile ci --workspace --bins
QUORUMID_IMAGE=quorumid-node:compose-test bash deploy/compose-test.sh
