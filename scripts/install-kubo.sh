#!/usr/bin/env bash
# Build a pinned Kubo (go-ipfs) for the tests and link it at <repo>/.cache/kubo/bin/ipfs.
# The build and Go's module/build caches live in a per-user cache shared by every clone
# (BANZAI_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/banzai), so a fresh clone on a
# machine that built it once only links it. Prints the binary's path on stdout.
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
shared="${BANZAI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/banzai}"
cache="$shared/kubo-$KUBO_VERSION"
bin="$cache/bin/ipfs"
link="$repo/.cache/kubo/bin/ipfs"

link_it() {
    mkdir -p "$(dirname "$link")"
    [[ "$(readlink "$link" 2>/dev/null)" == "$bin" ]] || ln -sfn "$bin" "$link"
    echo "$link"
}

if [[ -x "$bin" ]]; then
    link_it
    exit 0
fi

command -v go >/dev/null || { echo "install-kubo: the Go toolchain (go) is required" >&2; exit 1; }
mkdir -p "$cache/bin" "$cache/build"
# One build at a time per machine: two clones setting up at once share this cache (and its
# ipfs.tmp); the second waits, then finds the first one's binary.
exec 9>"$cache/.lock"
flock 9
if [[ -x "$bin" ]]; then
    link_it
    exit 0
fi
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
link_it
