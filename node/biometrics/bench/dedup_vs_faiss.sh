#!/usr/bin/env bash
# 1:N de-dup at scale, quorumid's exact gallery and HNSW gallery against FAISS HNSW on the
# same vectors, side by side in one run (BENCHMARKS.md, "Face de-dup at a million templates").
#
#   node/biometrics/bench/dedup_vs_faiss.sh [N] [M] [EF_CONSTRUCTION] [EF_LIST]
#
# Defaults: 1,000,000 templates, M 16, efConstruction 100, efSearch 64,128,256,512,1024.
# The Rust side (the `dedup_bench` example, `--release`, without the `extract` feature)
# generates the synthetic gallery, writes it to $HOME/.cache/quorumid-dedup and measures
# the exact gallery (plain scan and int4 pre-filter, 1 and 2 threads) and, unless GRAPH=0,
# our HNSW gallery; then FAISS (faiss-cpu from PyPI, in a venv under $HOME/.cache) reads the
# same vectors. Searches run on one thread (the exact gallery also on two); our graph builds
# on one, FAISS on FAISS_BUILD_THREADS (default 1). Our graph is written to (and, when it
# exists, read back from) $OUT/graph-N-mM-efcE.bin: delete it to measure a rebuild.
#
# GRAPH=0 skips our graph (its build takes 12 minutes at a million) and the graph-against-
# FAISS table; the exact gallery is still compared with FAISS at FAISS's best recall.
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
cargo build --quiet --release -p quorumid-biometrics --no-default-features --example dedup_bench
rm -f "$OUT/rust.tsv" "$OUT/exact.tsv"
if [ "${GRAPH:-1}" = 0 ]; then GRAPH_ARGS=(--no-graph true); else GRAPH_ARGS=(--graph "$OUT/graph-$N-m$M-efc$EFC.bin"); fi
"$CARGO_TARGET_DIR/release/examples/dedup_bench" --n "$N" --m "$M" --ef-construction "$EFC" \
    --ef "$EFS" --out "$OUT" "${GRAPH_ARGS[@]}"
echo "== load between: $(uptime)"
# FAISS reaches a given recall at a larger efSearch than ours: sweep further.
"$VENV/bin/python" node/biometrics/bench/faiss_hnsw.py "$OUT" "$M" "$EFC" "$EFS,1536,2048,3072" "${FAISS_BUILD_THREADS:-1}"
echo "== load after: $(uptime)"

# Side by side: for each of our efSearch, FAISS's qps at the same recall@10 (each against its
# own exact top 10: int8 for ours, float for FAISS), interpolated in log(qps) between the
# two FAISS points that bracket it, and at the smallest efSearch that reaches it.
python3 - "$OUT/exact.tsv" "$OUT/faiss.tsv" <<'PY'
import sys
exact = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
theirs = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])][1:]
best = max(theirs, key=lambda t: (float(t[2]), float(t[3])))
print()
print("Exact top 10 (recall 1.0 by construction) against FAISS HNSW at the highest recall@10 it")
print(f"reached (efSearch {best[0]}: {float(best[2]):.4f} against the int8 truth, "
      f"{float(best[1]):.4f} against the float one; FAISS never reaches 1.0): {float(best[3]):.0f} qps, one thread.")
print()
print("| exact scan | threads | top-10 qps | FAISS qps at its best recall | ratio |")
print("|---|---|---|---|---|")
for r in exact:
    if r[2] == "nearest 10":
        scan = "int4 pre-filter" if r[0] == "true" else "plain int8"
        print(f"| {scan} | {r[1]} | {float(r[8]):.0f} | {float(best[3]):.0f} | {float(r[8]) / float(best[3]):.2f}x |")
PY
[ -s "$OUT/rust.tsv" ] || exit 0

python3 - "$OUT/rust.tsv" "$OUT/faiss.tsv" <<'PY'
import math
import sys
ours = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
theirs = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])][1:]
pts = sorted((float(t[1]), float(t[3]), t[0]) for t in theirs)
def at(recall):
    for (r0, q0, _), (r1, q1, _) in zip(pts, pts[1:]):
        if r0 <= recall <= r1:
            f = (recall - r0) / (r1 - r0) if r1 > r0 else 0.0
            return math.exp(math.log(q0) + f * (math.log(q1) - math.log(q0)))
    return None
print()
print("| ef | quorumid recall@10 | quorumid qps | FAISS qps at that recall (interpolated) | ratio | FAISS efSearch reaching it | its recall@10 | its qps | ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for r in ours:
    ef, recall, qps = r[0], float(r[1]), float(r[2])
    q = at(recall)
    interp = f"{q:.0f} | {qps / q:.2f}x" if q else "out of range | "
    match = next((t for t in pts if t[0] >= recall), None)
    reach = (f"{match[2]} | {match[0]:.4f} | {match[1]:.0f} | {qps / match[1]:.2f}x"
             if match else "none | | |")
    print(f"| {ef} | {recall:.4f} | {qps:.0f} | {interp} | {reach} |")
PY
