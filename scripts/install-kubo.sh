#!/usr/bin/env bash
# Build a pinned Kubo (go-ipfs) into <repo>/.cache/kubo/bin for the CID parity tests.
# Skips the build when the binary already exists; prints the binary's path on stdout.
# Env: KUBO_VERSION (default v0.39.0), KUBO_GOTOOLCHAIN (default go1.25.5).
#
# Why not plain `go install github.com/ipfs/kubo/cmd/ipfs@v0.39.0`:
#  - `go install pkg@version` looks up the module's deprecation through the proxy's
#    version list, which some proxies refuse (403); a throw-away module that requires
#    the pinned version builds the same binary without that lookup;
#  - Kubo v0.39 depends on github.com/cockroachdb/swiss, whose runtime hooks only build
#    with Go < 1.26, so the Go toolchain is pinned to the 1.25 line (fetched by `go`
#    itself from the module proxy as golang.org/toolchain when not installed).
set -euo pipefail

KUBO_VERSION="${KUBO_VERSION:-v0.39.0}"
KUBO_GOTOOLCHAIN="${KUBO_GOTOOLCHAIN:-go1.25.5}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$repo/.cache/kubo"
bin="$cache/bin/ipfs"

if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "install-kubo: the Go toolchain (go) is required" >&2; exit 1; }
mkdir -p "$cache/bin" "$cache/build"
export GOTOOLCHAIN="$KUBO_GOTOOLCHAIN"
export GOMODCACHE="$cache/gomod"
export GOCACHE="$cache/gobuild"
export GOFLAGS="-modcacherw"
export CGO_ENABLED=0

mod="$cache/build/$KUBO_VERSION"
mkdir -p "$mod"
cat >"$mod/go.mod" <<EOF
module banzai.local/kubobuild

go 1.25

require github.com/ipfs/kubo $KUBO_VERSION
EOF
cat >"$mod/tools.go" <<'EOF'
//go:build tools

package tools

import _ "github.com/ipfs/kubo/cmd/ipfs"
EOF

echo "install-kubo: building github.com/ipfs/kubo/cmd/ipfs@$KUBO_VERSION with $GOTOOLCHAIN" \
    "(several minutes)" >&2
(cd "$mod" && go mod tidy >&2 && go build -trimpath -o "$bin.tmp" github.com/ipfs/kubo/cmd/ipfs >&2)
mv -f "$bin.tmp" "$bin"
"$bin" version >&2
echo "$bin"
