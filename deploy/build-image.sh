#!/usr/bin/env bash
# Builds the offline quorumid-node image (FROM scratch, no base image to pull) from a binary
# built on this machine: the binary, every shared library `ldd` lists and the dynamic loader.
#
#   deploy/build-image.sh [TAG] [BINARY]
#     TAG     image tag (default quorumid-node:dev)
#     BINARY  the quorumid-node binary (default $CARGO_TARGET_DIR/ci/quorumid-node, with
#             CARGO_TARGET_DIR defaulting to ~/.cache/quorumid-target); the `quorumid` CLI
#             beside it goes into the image too (for `kubectl exec ... quorumid cluster ...`).
#             Build both first with cargo build --profile ci --workspace --bins
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

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
cp "$binary" "$ctx/rootfs/usr/local/bin/quorumid-node"
cp "$cli" "$ctx/rootfs/usr/local/bin/quorumid"

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
