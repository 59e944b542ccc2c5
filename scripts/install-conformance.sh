#!/usr/bin/env bash
# Build github.com/ipfs/gateway-conformance (pinned) into <repo>/.cache/conformance/bin and keep
# its module source, which the tool needs at run time: `gateway-conformance test` runs
# `go test ./tests` inside that source tree. Skips the build when both are present.
# Prints the binary's path on stdout; exits 2 (with the reason on stderr) when it cannot be had.
# Env: CONFORMANCE_VERSION (default v0.13.2).
#
# Like scripts/install-kubo.sh, a throw-away module requires the pinned version instead of
# `go install pkg@version`, which looks up the module's deprecation through the proxy's version
# list (refused by some proxies). Caches: GOMODCACHE/GOCACHE under .cache/conformance.
set -euo pipefail

VERSION="${CONFORMANCE_VERSION:-v0.13.2}"
MODULE=github.com/ipfs/gateway-conformance
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$repo/.cache/conformance"
bin="$cache/bin/gateway-conformance"
home_file="$cache/bin/gateway-conformance.home"

if [[ -x "$bin" && -f "$home_file" && -d "$(cat "$home_file")" ]]; then
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "install-conformance: the Go toolchain (go) is required" >&2; exit 2; }
mkdir -p "$cache/bin" "$cache/build/$VERSION"
export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gobuild" GOFLAGS="-modcacherw" CGO_ENABLED=0
mod="$cache/build/$VERSION"
cat >"$mod/go.mod" <<EOM
module banzai.local/conformancebuild

go 1.24

require $MODULE $VERSION
EOM
cat >"$mod/tools.go" <<'EOM'
//go:build tools

package tools

import _ "github.com/ipfs/gateway-conformance/cmd/gateway-conformance"
EOM

echo "install-conformance: fetching $MODULE@$VERSION through the Go module proxy" >&2
if ! out="$(cd "$mod" && go mod download -json "$MODULE@$VERSION" 2>&1)"; then
    reason="$(printf '%s\n' "$out" | grep -m1 -iE 'error|403|404|forbidden|not available' || true)"
    echo "install-conformance: cannot download $MODULE@$VERSION: ${reason:-$out}" >&2
    exit 2
fi
(cd "$mod" && go mod tidy >&2 && go build -trimpath -o "$bin.tmp" "$MODULE/cmd/gateway-conformance" >&2)
(cd "$mod" && go list -m -f '{{.Dir}}' "$MODULE") >"$home_file"
# the suite's own test dependencies, so `go test ./tests` works offline later
(cd "$(cat "$home_file")" && go mod download >&2)
mv -f "$bin.tmp" "$bin"
echo "$bin"
