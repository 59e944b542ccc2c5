#!/usr/bin/env bash
# Install everything the tests need, then run lint, type checks and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"; .venv/bin/ruff check peer tasks tests scripts
echo "== mypy"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports
echo "== pytest"
mkdir -p test-artifacts
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 \
  --junitxml=test-artifacts/junit.xml "$@"
