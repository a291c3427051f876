#!/usr/bin/env bash
# Stages the image's root filesystem in $2/rootfs from the dialogd binary
# $1: the binary, every shared library `ldd` lists (and the loader), CA
# certificates, /etc/passwd and /etc/group with the nonroot user (65532,
# as in distroless), the example config, the proto, and the data volume's
# mount point owned by that user.
set -euo pipefail
binary=$1
out=$2/rootfs
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/dialogd" "$out/etc/ssl/certs" \
  "$out/usr/share/dialogd" "$out/var/lib/dialogd" "$out/tmp"
install -m 0755 "$binary" "$out/usr/local/bin/dialogd"
# Libraries by their real path, plus the names the binary asks for.
ldd "$binary" | awk '/=> \//{print $3} /^\s*\/[^ ]+/{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$out/etc/group"
cp "$root/deploy/dialogd.example.toml" "$out/etc/dialogd/dialogd.toml"
cp -r "$root/proto" "$out/usr/share/dialogd/proto"
chmod 1777 "$out/tmp"
chown 65532:65532 "$out/var/lib/dialogd"
