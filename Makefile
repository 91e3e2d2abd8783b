# The two commands that matter: `make demo` (the whole job end to end) and `make test` (everything
# CI checks). Both set up their own environment first (scripts/setup.sh, idempotent).
.PHONY: setup test lint demo bench bench-learning clean

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh

lint: setup
	@scripts/env.sh ruff check .
	@scripts/env.sh mypy spartan_ros bench

demo: setup
	@scripts/env.sh python -m spartan_ros.demo

# Speed and memory (issue 5): a markdown table + bench/results/bench.json. Pass a trained
# checkpoint for the int8 retrieval row: make bench BENCH_ARGS="--checkpoint C --data D".
bench: setup
	@scripts/env.sh python -m bench.engine_bench --out bench/results $(BENCH_ARGS)

# Learning (issue 4): generate drives, train tiny with and without pose for 20 min, evaluate.
bench-learning: setup
	@scripts/env.sh python -m bench.learning --out runs/learning

clean:
	rm -rf build install log .venv
