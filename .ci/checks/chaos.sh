#!/usr/bin/env bash
# The chaos suite's short profile (chaos/README.md): three seeded runs of real quorumid-node
# containers under partitions (iptables in each node's network namespace), kill -9, pauses, a
# rolling restart and a membership change, with a concurrent client workload; fails on any
# violated check. Needs a running Docker engine and root (for nsenter + iptables); installs
# iptables and util-linux (nsenter) on Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"
TARGET="$CARGO_TARGET_DIR"

if ! command -v iptables >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "chaos: installing iptables and util-linux (nsenter)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iptables util-linux >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "chaos: the Docker engine is not reachable (docker info failed); the chaos suite needs it" >&2
  exit 1
fi

# The whole workspace, as `cargo test --workspace` and the other checks build it: one feature
# selection, so RocksDB is compiled once per run.
cargo build -q --profile ci --workspace --bins
# The image is built from this binary by deploy/build-image.sh, inside the harness.
"$TARGET/ci/quorumid-chaos" --profile ci --out "$TARGET/chaos" \
  --node-binary "$TARGET/ci/quorumid-node"
