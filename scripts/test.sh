#!/usr/bin/env bash
# The whole test suite: lint, type check, then pytest (each test with a timeout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run() { printf '\n== %s\n' "$*"; scripts/env.sh "$@"; }
run ruff check .
run mypy spartan_ros training/spartan_train bench
# Test files are spread over SPARTAN_TEST_WORKERS processes (default 2; 1 runs them in this one):
# a file's tests stay together so that its fixtures are built once.
workers=${SPARTAN_TEST_WORKERS:-2}
if [[ $workers -gt 1 ]]; then
  run python -m pytest -n "$workers" --dist loadfile "$@"
else
  run python -m pytest "$@"
fi
