#!/usr/bin/env bash
# Face extraction, quorumid-biometrics (tract) beside OpenCV (FaceDetectorYN +
# FaceRecognizerSF), on the same 400 ORL images with the same models, one thread each, one
# after the other in one run. Prints both sides' tables, then the comparison.
#
#   node/biometrics/bench/face_vs_opencv.sh [ROUNDS]     # default 3 rounds of 400 faces
#
# Gets the models and images with models/fetch.sh, and OpenCV from PyPI into a venv under
# $HOME/.cache (opencv-python-headless, pinned below).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
rounds="${1:-3}"
opencv_version=5.0.0.93

models="$("$here/../models/fetch.sh")"
venv="$HOME/.cache/quorumid-opencv-venv"
if ! "$venv/bin/python" -c "import cv2, numpy; assert cv2.__version__ == '${opencv_version%.*}'" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "opencv-python-headless==$opencv_version" numpy >&2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}"
(cd "$root" && cargo build --quiet --profile ci -p quorumid-biometrics --example face_extract_bench)

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "== load: $(uptime)"
"$CARGO_TARGET_DIR/ci/examples/face_extract_bench" "$models" "$rounds" | tee "$out/tract"
echo
OMP_NUM_THREADS=1 "$venv/bin/python" "$here/opencv_face.py" "$models" "$rounds" | tee "$out/opencv"
echo
"$venv/bin/python" - "$out/tract" "$out/opencv" <<'PY'
import json, sys
sides = [json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3]]
tract, opencv = sides
print(f"per face, ms (median / p99), {tract['faces']} faces a side; tract on one thread, "
      f"OpenCV {opencv['version']} with setNumThreads(1)")
print("| stage | tract median | tract p99 | OpenCV median | OpenCV p99 | ratio (median) |")
print("|---|---|---|---|---|---|")
for stage in ["detect", "align", "embed", "total"]:
    t, o = tract[stage], opencv[stage]
    ratio = t[0] / o[0] if o[0] > 0 else float("inf")
    print(f"| {stage} | {t[0]:.3f} | {t[1]:.3f} | {o[0]:.3f} | {o[1]:.3f} | {ratio:.2f}x |")
PY
echo "== load: $(uptime)"
