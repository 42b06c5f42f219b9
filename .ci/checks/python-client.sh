#!/usr/bin/env bash
# The Python client example (client/examples/python) against a real local cluster: stubs
# generated from proto/ with grpcio-tools, an identity enrolled and revoked with the `quorumid`
# CLI, verified from Python before and after. Also checks the CLI's exit codes.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"
VENV="$HOME/.cache/quorumid-venv"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check grpcio==1.85.1 grpcio-tools==1.85.1
# The whole workspace, so features unify as in `cargo test --workspace` (no second RocksDB build).
cargo build -q --profile ci --workspace --bins
NODE_BIN="$TARGET/ci/quorumid-node"
QID="$TARGET/ci/quorumid"

work="$(mktemp -d)"
"$NODE_BIN" dev --dir "$work/dev" --base-port 17100 --fresh >"$work/dev.log" 2>&1 &
dev=$!
cleanup() { kill -INT "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

export QUORUMID_NODES=http://127.0.0.1:17101,http://127.0.0.1:17102,http://127.0.0.1:17103
for _ in $(seq 1 120); do
  grep -q "Ctrl-C stops the cluster" "$work/dev.log" && break
  kill -0 "$dev" 2>/dev/null || { cat "$work/dev.log"; exit 1; }
  sleep 0.5
done
grep -q "Ctrl-C stops the cluster" "$work/dev.log" || { cat "$work/dev.log"; exit 1; }

expect_exit() {  # expect_exit CODE command...
  local want=$1; shift
  set +e; "$@" >"$work/out" 2>&1; local got=$?; set -e
  if [ "$got" -ne "$want" ]; then
    echo "expected exit $want, got $got from: $*"; cat "$work/out"; exit 1
  fi
}

id=$("$QID" --json enroll --province ON --document PY-0001 | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["identity_id"])')
nodes=(--node 127.0.0.1:17101 --node 127.0.0.1:17102 --node 127.0.0.1:17103)
example=client/examples/python/verify.py

expect_exit 0 "$VENV/bin/python" "$example" "${nodes[@]}" --level LINEARIZABLE "$id"
grep -q '"status": "ACTIVE"' "$work/out"
token=$("$QID" --json revoke "$id" --reason fraud --authority-province ON | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["commit_token"])')
expect_exit 3 "$VENV/bin/python" "$example" "${nodes[@]}" --level AT_LEAST --min-index "$token" "$id"
grep -q '"status": "REVOKED"' "$work/out"
# A dead first node: the example moves on to the next.
expect_exit 3 "$VENV/bin/python" "$example" --node 127.0.0.1:1 "${nodes[@]}" "$id"

# The CLI's exit codes, which scripts rely on.
expect_exit 3 "$QID" verify "$id" --level linearizable
expect_exit 4 "$QID" revoke "$id" --reason fraud --authority-province ON
expect_exit 4 "$QID" enroll --province ON --document PY-0001
id2=$("$QID" --json enroll --province ON --document PY-0003 | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["identity_id"])')
expect_exit 6 "$QID" suspend "$id2" --reason fraud --authority-province QC
expect_exit 2 "$QID" enroll --province 'on!' --document PY-0002
expect_exit 5 "$QID" --node http://127.0.0.1:1 --deadline-ms 500 verify "$id"
# Bulk enrollment: five lines, one a document enrolled above: exit 4 and a summary.
for i in 1 2 3 4; do echo "{\"province\": \"QC\", \"document\": \"BULK-$i\"}"; done >"$work/batch.jsonl"
echo '{"province": "ON", "document": "PY-0001"}' >>"$work/batch.jsonl"
expect_exit 4 "$QID" --json bulk-enroll "$work/batch.jsonl"
grep -q '"enrolled":4' "$work/out"
grep -q '"duplicates":1' "$work/out"
echo "python client example and CLI exit codes: ok"
