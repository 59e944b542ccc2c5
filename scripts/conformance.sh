#!/usr/bin/env bash
# Run the vendored IPFS gateway conformance suite against a fresh banzai peer on 127.0.0.1:
#   scripts/conformance.sh [--out DIR] [--specs SPECS] [--update]
# (see scripts/conformance.py; --update rewrites the known failures list and docs/conformance.md)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$repo/.venv/bin/python"
[[ -x "$py" ]] || py=python3
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$py" "$repo/scripts/conformance.py" "$@"
