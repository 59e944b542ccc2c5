#!/usr/bin/env bash
# Run the IPFS gateway conformance suite against a fresh banzai peer on 127.0.0.1.
#   scripts/conformance.sh [OUT_DIR]     (default .cache/conformance/report)
# Writes OUT_DIR/results.json (go test2json events), summary.json and summary.md; exit code 0
# when it ran (whatever the counts), 2 when the suite cannot be installed (reason in
# summary.json and on stderr). Specs: CONFORMANCE_SPECS (default the trustless block and CAR
# gateways and the path gateway's UnixFS tests, which include the range requests).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-$repo/.cache/conformance/report}" && cd "${1:-$repo/.cache/conformance/report}" && pwd)"
specs="${CONFORMANCE_SPECS:-trustless-block-gateway,trustless-car-gateway,path-unixfs-gateway}"
py="$repo/.venv/bin/python"
[[ -x "$py" ]] || py=python3

if ! bin="$("$repo/scripts/install-conformance.sh" 2>"$out/install.log")"; then
    cat "$out/install.log" >&2
    "$py" - "$out" "$out/install.log" <<'EOP'
import json, sys
reason = open(sys.argv[2]).read().strip().splitlines()[-1:]
json.dump({"ran": False, "reason": reason[0] if reason else "install failed"},
          open(f"{sys.argv[1]}/summary.json", "w"), indent=2)
EOP
    exit 2
fi
home="$(cat "$bin.home")"
export GOMODCACHE="$repo/.cache/conformance/gomod" GOCACHE="$repo/.cache/conformance/gobuild"
export GOFLAGS="-modcacherw" GOPROXY=off GATEWAY_CONFORMANCE_HOME="$home"

work="$(mktemp -d)"
peer_pid=""
cleanup() { [[ -n "$peer_pid" ]] && kill "$peer_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# a peer of its own: loopback HTTP, no mDNS, a mesh name nobody else uses
PYTHONPATH="$repo" "$repo/.venv/bin/banzai-peer" --data-dir "$work/peer" --http 127.0.0.1:0 \
    --no-mdns --mesh-name "conformance-$$" --log-level WARNING >"$work/peer.log" 2>&1 &
peer_pid=$!
url=""
for _ in $(seq 1 300); do
    url="$(grep -oE 'web UI: http://[^ ]+' "$work/peer.log" | head -1 | sed 's/^web UI: //; s:/$::')" || true
    [[ -n "$url" ]] && break
    sleep 0.1
done
[[ -n "$url" ]] || { cat "$work/peer.log" >&2; echo "conformance: the peer did not start" >&2; exit 1; }

token="$(cat "$work/peer/http-token")"  # /api/v0/ needs the peer's token
"$bin" extract-fixtures --directory "$work/fixtures" >&2
imported=0; failed=0
while IFS= read -r -d '' car; do
    if curl -fsS -X POST -H "Authorization: Bearer $token" -F "file=@$car" \
            "$url/api/v0/dag/import?pin-roots=false" >/dev/null 2>>"$out/import.log"; then
        imported=$((imported + 1))
    else
        failed=$((failed + 1)); echo "import failed: $car" >>"$out/import.log"
    fi
done < <(find "$work/fixtures" -name '*.car' -print0)
echo "conformance: imported $imported fixture CARs ($failed refused) into $url" >&2

set +e
(cd "$home" && "$bin" test --gateway-url "$url" --specs "$specs" \
    --json "$out/results.json" -- -timeout 5m) >"$out/test.log" 2>&1
rc=$?
set -e
"$py" - "$out" "$rc" "$specs" "$imported" "$failed" <<'EOP'
import collections, json, sys
out, rc, specs, imported, refused = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:6])
results: dict[str, str] = {}
for line in open(f"{out}/results.json", errors="replace"):
    try:
        ev = json.loads(line)
    except ValueError:
        continue
    if ev.get("Test") and ev.get("Action") in ("pass", "fail", "skip"):
        results[ev["Test"]] = ev["Action"]
leaves = {t: a for t, a in results.items() if not any(o.startswith(t + "/") for o in results)}
per_group: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
for test, action in leaves.items():
    per_group[test.split("/")[0]][action] += 1
total = collections.Counter(leaves.values())
summary = {"ran": True, "exit_code": rc, "specs": specs, "fixtures_imported": imported,
           "fixtures_refused": refused, "total": dict(total),
           "groups": {g: dict(c) for g, c in sorted(per_group.items())},
           "failed": sorted(t for t, a in leaves.items() if a == "fail"),
           "skipped": sorted(t for t, a in leaves.items() if a == "skip")}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
with open(f"{out}/summary.md", "w") as md:
    md.write(f"specs: {specs}\n\n| group | pass | fail | skip |\n|---|---|---|---|\n")
    for g, c in sorted(per_group.items()):
        md.write(f"| {g} | {c['pass']} | {c['fail']} | {c['skip']} |\n")
    md.write(f"| **total** | {total['pass']} | {total['fail']} | {total['skip']} |\n")
print(json.dumps(summary["total"]))
EOP
