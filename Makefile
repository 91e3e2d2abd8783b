# The two commands that matter: `make demo` (the whole job end to end) and `make test` (everything
# CI checks). Both set up their own environment first (scripts/setup.sh, idempotent).
.PHONY: setup test lint demo bench bench-learning bench-drives bench-reliability model clean

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh

lint: setup
	@scripts/env.sh ruff check .
	@scripts/env.sh mypy spartan_ros training/spartan_train bench

demo: setup
	@scripts/env.sh python -m spartan_train.demo

# Speed and memory (issue 5): a markdown table + bench/results/bench.json. Pass a trained
# checkpoint for the int8 retrieval row: make bench BENCH_ARGS="--checkpoint C --data D".
bench: setup
	@scripts/env.sh python -m bench.engine_bench --out bench/results $(BENCH_ARGS)

# Learning (issue 4): generate drives, train tiny with and without pose for 20 min, evaluate.
bench-learning: setup
	@scripts/env.sh python -m bench.learning --out runs/learning

# The node's task (issue 6): within-drive text retrieval on unseen drives, via spartan-bag eval.
bench-drives: setup
	@scripts/env.sh python -m bench.drive_retrieval assets/models/tiny-synth --out runs/drive_retrieval

# Reliability (issue 11): damage to the memory file, 20 SIGKILLs, 100 lifecycle cycles, and 4
# query clients for 60 s while the demo's drive replays at rate 1 (about 15 min).
bench-reliability: setup
	@scripts/env.sh python -m bench.reliability --out bench/results $(BENCH_ARGS)

# Rebuild assets/models/tiny-synth from scratch (about 2 h on 2 cores; stages are kept).
model: setup
	@bash scripts/train_tiny_synth.sh

clean:
	rm -rf build install log .venv
