#!/usr/bin/env bash
# Builds the runtime image FROM scratch with buildah (no registry, no
# Docker engine needed) and tags it `${2:-dialogd:ci}`; the binary is $1
# (CI: target/release/dialogd). tests/python/test_image.py then runs it.
set -euo pipefail
binary=${1:?usage: check.sh BINARY [TAG]}
tag=${2:-dialogd:ci}
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="$here/containers.conf"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
"$here/stage-rootfs.sh" "$binary" "$context"
cp "$here/Containerfile" "$context/"
buildah --storage-driver vfs bud --quiet --isolation chroot -f "$context/Containerfile" -t "$tag" "$context" >/dev/null
echo "built $tag from $binary ($(du -sh "$context/rootfs" | cut -f1) root filesystem)"
