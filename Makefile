# The two commands that matter: `make demo` (the whole job end to end) and `make test` (everything
# CI checks). Both set up their own environment first (scripts/setup.sh, idempotent).
.PHONY: setup test lint demo bench bench-learning bench-drives fuzz model clean bench-ingest bench-fleet bench-fleet-ingest bench-export bench-spread bench-layouts bench-conventions bench-reliability bench-replays bench-paths

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

# Ingest at camera rates (issue 12): a recorded camera (640x480, 720p, 1080p rgb8 and 1080p JPEG
# at 30 Hz, odometry at 100 Hz) replayed into the live node over DDS, 60 s each, with Fast DDS's
# defaults and with the package's profile (~15 min); tables + bench/results/ingest.json.
# Shorter: make bench-ingest INGEST_ARGS="--seconds 10"; where images are lost: add --witness.
bench-ingest: setup
	@scripts/env.sh python -m bench.ingest --out bench/results $(INGEST_ARGS)

# Learning (issue 4): generate drives, train tiny with and without pose for 20 min each (both
# cores), evaluate on the test set of the protocol (docs/evaluation.md).
bench-learning: setup
	@scripts/env.sh python -m bench.learning --out runs/learning

# The pose conventions side by side, 20 min each: the selection set chooses the default, the
# test set is reported; paper protocol, look-alike clips and within-drive retrieval (add --reuse
# in BENCH_ARGS to evaluate models already trained).
bench-conventions: setup
	@scripts/env.sh python -m bench.learning --variants pose_heading pose_reference no_pose \
	  --report-set selection test --drives selection test --out runs/conventions $(BENCH_ARGS)

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

# Does a planner's path pick the right one of two look-alike drives (same start, town and
# weather, different ways at the first intersection)? The test drives, one core, ~2 min.
bench-paths: setup
	@scripts/env.sh python -m bench.path_picks assets/models/tiny-synth --set test \
	  --out runs/path_picks

# How far the test figure moves between the test drives and as many other drives.
bench-spread: setup
	@scripts/env.sh python -m bench.drive_retrieval assets/models/tiny-synth --set test --spread \
	  --reuse --out runs/drive_retrieval

# Input fuzzing (issue 11): the test suite runs 30 cases per input class; this runs more.
FUZZ_EXAMPLES ?= 500
fuzz: setup
	@SPARTAN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) scripts/env.sh python -m pytest test/test_fuzz_inputs.py -s -q --timeout=0

# Fleet memory (issue 13): Milvus Lite vs the in-RAM exact scan; a table +
# bench/results/fleet/bench.json. 10⁵ takes ~20 min. 10⁶ (bench/results/fleet-1e6.json; Milvus
# Lite alone would need ~24 GB at its compaction peaks, docs/fleet.md), each store in its own
# process, inserts stopped at 2600 s, 12 GiB RSS or 5 GiB left on the machine:
# make bench-fleet FLEET_SIZES=1000000 FLEET_ARGS="--separate --queries 10 --max-insert-s 2600 --max-rss-gib 12 --min-available-gib 5"
FLEET_SIZES ?= 100000
bench-fleet: setup
	@scripts/env.sh python -m bench.fleet --sizes $(FLEET_SIZES) --out bench/results/fleet $(FLEET_ARGS)

# What a Milvus Lite insert costs and what changes it (upsert or insert, batch size, released
# collection, flushes, Milvus Lite's memtable and allocator, schema, index): one variant per
# process, a table + bench/results/fleet-ingest/bench.json. ~1 min per variant at 20k.
FLEET_INGEST_N ?= 20000
bench-fleet-ingest: setup
	@scripts/env.sh python -m bench.fleet_ingest --n $(FLEET_INGEST_N) --out bench/results/fleet-ingest $(FLEET_INGEST_ARGS)

# Export time and parity, dynamo exporter vs TorchScript: a table + bench/results/export.json.
# make bench-export BENCH_ARGS="--models tiny B/16 --repeats 2"
bench-export: setup
	@scripts/env.sh python -m bench.export_bench --out bench/results $(BENCH_ARGS)

# Reliability (issue 11): damage to the memory file, 20 SIGKILLs, 100 lifecycle cycles, and 4
# query clients for 60 s while the demo's drive replays at rate 1 (about 15 min).
bench-reliability: setup
	@scripts/env.sh python -m bench.reliability --out bench/results $(BENCH_ARGS)

# The demo's drive replayed 10 times at rate 1 and 10 at rate 2, a fresh node each time.
bench-replays: setup
	@scripts/env.sh python -m bench.replays --runs 10 --rates 1,2 $(BENCH_ARGS)

# Rebuild assets/models/tiny-synth from scratch (about 2 h 20 min on 2 cores; stages are kept).
model: setup
	@bash scripts/train_tiny_synth.sh

clean:
	rm -rf build install log .venv
