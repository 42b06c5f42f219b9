#!/usr/bin/env bash
# A short run of the quorumid-vs-etcd benchmark (client/bench): both 3-node clusters start,
# every operation runs at 1 and 16 clients for a second, and the leader is killed twice per
# system. Checks that every point was measured without a single failed call and that each
# failover ended in an acknowledged write. (The figures of BENCHMARKS.md come from the full
# run, client/bench/run.sh; a 1-second point on a shared CI machine proves nothing about speed.)
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"

if ! command -v etcd >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi
cargo build -q --profile ci --workspace --bins

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$TARGET/ci/quorumid-bench" --dir "$work/data" --out "$work/results.json" \
  --seconds 1 --warmup-seconds 1 --concurrency 1,16 --failover-runs 2 --base-port 17600 \
  >"$work/table.md" 2>"$work/bench.log" || { cat "$work/bench.log"; exit 1; }
cat "$work/table.md"
python3 - "$work/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
points = r["points"]
ops = {p["op"] for p in points}
assert ops == {"status", "enroll", "bounded", "linearizable", "local"}, ops
assert len(points) == 5 * 2 * 2, len(points)
for p in points:
    where = f'{p["system"]} {p["op"]} x{p["clients"]}'
    assert p["ok"] > 0, f"{where}: no call succeeded"
    assert p["errors"] == 0, f'{where}: {p["errors"]} failed calls, e.g. {p["first_error"]}'
    assert p["p50_ms"] <= p["p99_ms"] <= p["p999_ms"], where
for f in r["failover"]:
    assert len(f["runs_ms"]) == 2 and all(ms > 0 for ms in f["runs_ms"]), f
assert {f["system"] for f in r["failover"]} == {"quorumid", "etcd"}
print("bench check: ok")
PY
