# The two commands that matter: `make demo` (the whole job end to end) and `make test` (everything
# CI checks). Both set up their own environment first (scripts/setup.sh, idempotent).
.PHONY: setup test lint demo bench bench-learning bench-drives bench-spread bench-layouts \
	bench-conventions model clean

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

# Learning (issue 4): generate drives, train tiny with and without pose for 20 min each (both
# cores), evaluate on the test set of the protocol (docs/evaluation.md).
bench-learning: setup
	@scripts/env.sh python -m bench.learning --out runs/learning

# The pose conventions side by side on the selection set (where the default is chosen).
bench-conventions: setup
	@scripts/env.sh python -m bench.learning --variants pose_heading pose_reference no_pose \
	  --report-set selection --out runs/conventions

# torchrun 2 x 1 thread against 1 process x 2 threads, on a small generated set.
bench-layouts: setup
	@[ -f runs/layout-data/meta/dataset.json ] || scripts/env.sh spartan-synth \
	  --out runs/layout-data --seed 0 --sequences 8 --frames 200 --workers 2
	@scripts/env.sh python -m bench.train_layouts --data runs/layout-data --repeats 2 \
	  --out runs/layouts

# The node's task: within-drive text retrieval on the test drives, via spartan-bag eval.
bench-drives: setup
	@scripts/env.sh python -m bench.drive_retrieval assets/models/tiny-synth --set test \
	  --out runs/drive_retrieval

# How far the test figure moves between the test drives and as many other drives.
bench-spread: setup
	@scripts/env.sh python -m bench.drive_retrieval assets/models/tiny-synth --set test --spread \
	  --reuse --out runs/drive_retrieval

# Rebuild assets/models/tiny-synth from scratch (about 2 h on 2 cores; stages are kept).
model: setup
	@bash scripts/train_tiny_synth.sh

clean:
	rm -rf build install log .venv
