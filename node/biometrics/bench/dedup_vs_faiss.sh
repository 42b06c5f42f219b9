#!/usr/bin/env bash
# 1:N de-dup at scale, quorumid's HNSW gallery against FAISS HNSW on the same vectors, side
# by side in one run (BENCHMARKS.md, "Face de-dup at a million templates").
#
#   node/biometrics/bench/dedup_vs_faiss.sh [N] [M] [EF_CONSTRUCTION] [EF_LIST]
#
# Defaults: 1,000,000 templates, M 16, efConstruction 100, efSearch 64,128,256,512,1024.
# The Rust side (the `dedup_bench` example, `--profile ci`) generates the synthetic gallery,
# writes it to $HOME/.cache/quorumid-dedup and measures; then FAISS (faiss-cpu from PyPI, in
# a venv under $HOME/.cache) reads the same vectors. Both build and search on one thread.
set -euo pipefail
cd "$(dirname "$0")/../../.."

N="${1:-1000000}"
M="${2:-16}"
EFC="${3:-100}"
EFS="${4:-64,128,256,512,1024}"
OUT="$HOME/.cache/quorumid-dedup"
VENV="$HOME/.cache/quorumid-faiss-venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import faiss, numpy" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet faiss-cpu numpy
fi

echo "== load before: $(uptime)"
cargo build --quiet --profile ci -p quorumid-biometrics --example dedup_bench
"$CARGO_TARGET_DIR/ci/examples/dedup_bench" --n "$N" --m "$M" --ef-construction "$EFC" \
    --ef "$EFS" --out "$OUT"
echo "== load between: $(uptime)"
# FAISS reaches a given recall at a larger efSearch than ours: sweep further.
"$VENV/bin/python" node/biometrics/bench/faiss_hnsw.py "$OUT" "$M" "$EFC" "$EFS,1536,2048,3072" 1
echo "== load after: $(uptime)"

# Side by side: for each of our efSearch, FAISS's qps at the smallest efSearch that reaches
# at least our recall@10 (each against its own exact top 10: int8 for ours, float for FAISS).
python3 - "$OUT/rust.tsv" "$OUT/faiss.tsv" <<'PY'
import sys
ours = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
theirs = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])][1:]
print()
print("| ef | quorumid recall@10 | quorumid qps | FAISS efSearch at >= that recall | FAISS recall@10 | FAISS qps | ratio |")
print("|---|---|---|---|---|---|---|")
for r in ours:
    ef, recall, qps = r[0], float(r[1]), float(r[2])
    match = next((t for t in theirs if float(t[1]) >= recall), None)
    if match is None:
        print(f"| {ef} | {recall:.4f} | {qps:.0f} | none reaches it | | | |")
    else:
        print(f"| {ef} | {recall:.4f} | {qps:.0f} | {match[0]} | {float(match[1]):.4f} | "
              f"{float(match[3]):.0f} | {qps / float(match[3]):.2f}x |")
PY
