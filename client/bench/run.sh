#!/usr/bin/env bash
# Runs quorumid-bench: installs etcd (Debian's etcd-server 3.4) if missing, builds the
# workspace's binaries with the `ci` profile (the one the tests use: one RocksDB build), runs
# the benchmark, and draws docs/bench.png from its results. Arguments go to quorumid-bench,
# e.g. `client/bench/run.sh --seconds 3 --failover-runs 5`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"

bash .ci/prereqs
if ! command -v etcd >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi
# --workspace: selecting one package would resolve RocksDB's build features differently
# and compile it again.
cargo build --profile ci --workspace --bins
"$CARGO_TARGET_DIR/ci/quorumid-bench" --out docs/bench-results.json "$@"

venv="$HOME/.cache/quorumid-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import matplotlib' 2>/dev/null || "$venv/bin/pip" install -q matplotlib
"$venv/bin/python" client/bench/chart.py docs/bench-results.json docs/bench.png
