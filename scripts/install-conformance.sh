#!/usr/bin/env bash
# Build github.com/ipfs/gateway-conformance from the vendored release archive
# (../shared/vendor/gateway-conformance-22c76440.tar.gz, see ../shared/vendor/README.md) into a
# per-machine cache shared by every clone (BANZAI_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/banzai),
# keeping the extracted source tree: `gateway-conformance test` runs `go test ./tests` inside it.
# Builds once; later runs only print the path. Prints the binary's path on stdout (its source
# tree is the file "$bin.home"); exits 2 with the reason on stderr when it cannot be built.
# The suite itself is never fetched from the network; its Go dependencies come from the module
# proxy on the first build and are downloaded then, so `go test` later runs with GOPROXY=off.
# Env: CONFORMANCE_ARCHIVE (default <repo>/../shared/vendor/gateway-conformance-22c76440.tar.gz).
set -euo pipefail

COMMIT=22c76440
SHA256=bbcf61d0e7a204f9e7dfdce0d3fa7e9bca097d9f6e7b3aead06384a59b838fdb
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="${CONFORMANCE_ARCHIVE:-$repo/../shared/vendor/gateway-conformance-$COMMIT.tar.gz}"
shared="${BANZAI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/banzai}"
cache="$shared/gateway-conformance-$COMMIT"
src="$cache/src/gateway-conformance"
bin="$cache/bin/gateway-conformance"

if [[ -x "$bin" && -f "$bin.home" && -d "$(cat "$bin.home")/tests" ]]; then
    echo "$bin"
    exit 0
fi

fail() { echo "install-conformance: $*" >&2; exit 2; }
command -v go >/dev/null || fail "the Go toolchain (go) is required"
[[ -f "$archive" ]] || fail "vendored archive not found: $archive"
got="$(sha256sum "$archive" | cut -d' ' -f1)"
[[ "$got" == "$SHA256" ]] || fail "sha256 of $archive is $got, expected $SHA256"

# One build at a time per machine: two clones setting up at once share this cache (and its
# src and bin.tmp); the second waits, then finds the first one's build.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -x "$bin" && -f "$bin.home" && -d "$(cat "$bin.home")/tests" ]]; then
    echo "$bin"
    exit 0
fi

export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gobuild" GOFLAGS="-modcacherw" CGO_ENABLED=0
rm -rf "$cache/src.tmp"
mkdir -p "$cache/src.tmp" "$cache/bin"
tar -xzf "$archive" -C "$cache/src.tmp"
rm -rf "$cache/src"
mv "$cache/src.tmp" "$cache/src"
echo "install-conformance: building gateway-conformance ($COMMIT) in $src" >&2
(cd "$src" && go mod download >&2 && go build -trimpath -o "$bin.tmp" ./cmd/gateway-conformance >&2) \
    || fail "go build failed (its dependencies come from the Go module proxy)"
# compile the tests once, so the first `go test ./tests` does not pay for it
(cd "$src" && go test -count=1 -run '^$' ./tests >&2) || fail "go test ./tests does not compile"
echo "$src" >"$bin.home"
mv -f "$bin.tmp" "$bin"
echo "$bin"
