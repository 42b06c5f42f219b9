#!/usr/bin/env bash
# `promtool check metrics` on a real scrape of a node's /metrics: the `telemetry` test
# (node/tests/telemetry.rs) runs a cluster, scrapes the leader and writes the scrape to
# $CARGO_TARGET_DIR/tmp/metrics-sample.txt. Installs Debian's `prometheus` package (for
# promtool) if it is missing. Then checks the Grafana dashboard (deploy/grafana): its queries
# parse as PromQL and name only metrics the node serves.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"
sample="$CARGO_TARGET_DIR/tmp/metrics-sample.txt"

if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "metrics: installing promtool (Debian package prometheus)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "metrics: promtool not found; install Prometheus' promtool" >&2
    exit 1
  fi
fi

# A fresh scrape, from this build (the test is already compiled by `cargo test`).
rm -f "$sample"
cargo test -q --profile ci --workspace --test telemetry -- metrics_endpoint >/dev/null
if [ ! -s "$sample" ]; then
  echo "metrics: the telemetry test did not write $sample" >&2
  exit 1
fi
promtool check metrics < "$sample"
echo "metrics: promtool check metrics passed ($(grep -c '^# TYPE' "$sample") metric families)"

# The dashboard: every query is valid PromQL and every metric it reads is served.
dashboard=deploy/grafana/quorumid-dashboard.json
rules="$(mktemp --suffix=.yml)"
trap 'rm -f "$rules"' EXIT
python3 - "$dashboard" "$sample" "$rules" <<'PY'
import json, re, sys
dashboard, sample, rules = sys.argv[1:]
served = {line.split()[2] for line in open(sample) if line.startswith("# TYPE ")}
exprs = [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p.get("targets", [])]
missing = set()
for expr in exprs:
    for name in re.findall(r"quorumid_[a-z_]+", expr):
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in served and family not in served:
            missing.add(name)
if missing:
    sys.exit(f"dashboard reads metrics the node does not serve: {sorted(missing)}")
with open(rules, "w") as f:
    f.write("groups:\n- name: dashboard\n  rules:\n")
    for i, expr in enumerate(exprs):
        expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        f.write(f"  - record: dashboard:query{i}\n    expr: {json.dumps(expr)}\n")
print(f"metrics: the dashboard's {len(exprs)} queries read served metrics")
PY
promtool check rules "$rules" >/dev/null
echo "metrics: the dashboard's queries parse (promtool check rules)"
