#!/usr/bin/env bash
# The whole test suite: lint, type check, then pytest (each test with a timeout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run() { printf '\n== %s\n' "$*"; scripts/env.sh "$@"; }
run ruff check .
run mypy spartan_ros training/spartan_train bench
run python -m pytest "$@"
