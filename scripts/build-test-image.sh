#!/usr/bin/env bash
# Build the container tests' image, localhost/busybox:test, from Debian's static busybox when
# it is missing (no registry is reachable: see ../shared/MACHINE.md). Usage: [RUNTIME]
set -euo pipefail
runtime=${1:-podman}
image=localhost/busybox:test
"$runtime" image exists "$image" 2>/dev/null && exit 0
busybox=$(command -v busybox || true)
[[ -n $busybox ]] || { echo "build-test-image: no busybox (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for c in sh cat wc ls sleep echo head mkdir dd tr env true false touch printf; do
  ln -sf busybox "$root/bin/$c"
done
tar -C "$root" -c . | "$runtime" import -q - "$image" >/dev/null
echo "build-test-image: built $image"
