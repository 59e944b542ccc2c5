#!/usr/bin/env bash
# Install everything the tests need, then run lint, type checks and the whole suite: the
# integration tests on 2 xdist workers, then the unit tests on 2. One junit file for both,
# test-artifacts/junit.xml. With arguments: one plain pytest run of them instead.
# Integration on 2 workers (session 50; before, one at a time "because CPU contention would
# make them flaky"): they mostly wait (leases, suspicion, peer starts, Chromium), and no two
# tests share a port, path, mesh, netns, user or container name (tests/integration/
# conftest.py says what keeps each apart). `--dist loadfile` picks their scheduler
# (tests/integration/schedule.py): a module is one unit (its module-scoped peers start once),
# each test of a module without them is one, and the longest unit waiting goes first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"; .venv/bin/ruff check peer tasks tests scripts
# mypy's cache lives outside the clone, shared by the clones of this machine: a fresh clone
# starts warm (mypy checks a cached module by its content hash when its mtime differs: 0.4 s
# instead of 11-28 s cold); one mypy at a time writes it (flock), so clones never mix writes
mypy_cache=${BANZAI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/banzai}  # (as scripts/install-kubo.sh)
echo "== mypy"
if mkdir -p "$mypy_cache" 2>/dev/null && command -v flock >/dev/null; then
  flock "$mypy_cache/mypy.lock" .venv/bin/mypy --cache-dir "$mypy_cache/mypy"
else
  .venv/bin/mypy
fi
echo "== import contracts"; .venv/bin/lint-imports
mkdir -p test-artifacts
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25)
if (( $# )); then
  echo "== pytest"
  exec "${pytest[@]}" --junitxml=test-artifacts/junit.xml "$@"
fi
parts=$(mktemp -d)
status=0
echo "== pytest: tests/integration, 2 workers"
start=$SECONDS
"${pytest[@]}" -n 2 --dist loadfile --junitxml="$parts/integration.xml" tests/integration \
  || status=$?
integration=$((SECONDS - start))
echo "== pytest: tests/unit, 2 workers"
start=$SECONDS
"${pytest[@]}" -n 2 --junitxml="$parts/unit.xml" tests/unit || { rc=$?; (( status )) || status=$rc; }
unit=$((SECONDS - start))
echo "== pytest: $((integration + unit)) s (integration $integration s, unit $unit s)"
.venv/bin/python scripts/junit_merge.py test-artifacts/junit.xml "$parts/integration.xml" \
  "$parts/unit.xml" || status=1
rm -rf "$parts"
exit "$status"
