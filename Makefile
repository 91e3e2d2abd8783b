# The two commands that matter: `make demo` (the whole job end to end) and `make test` (everything
# CI checks). Both set up their own environment first (scripts/setup.sh, idempotent).
.PHONY: setup test lint demo clean

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh

lint: setup
	@scripts/env.sh ruff check .
	@scripts/env.sh mypy spartan_ros

demo: setup
	@scripts/env.sh python -m spartan_ros.demo

clean:
	rm -rf build install log .venv
